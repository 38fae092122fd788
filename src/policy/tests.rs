use super::*;

fn roles(r: &[&str]) -> Box<[Box<str>]> {
    r.iter().map(|s| Box::from(*s)).collect()
}

fn identity(r: &[&str]) -> Identity {
    Identity { roles: r.iter().map(|s| s.to_string()).collect(), ..Default::default() }
}

fn facts<'a>(path: &'a str, reason: Option<&'static [u8]>) -> RequestFacts<'a> {
    RequestFacts { path, reason, now: 1_000 }
}

fn access() -> AccessRules {
    AccessRules {
        admin_prefix: Some("/admin".into()),
        admin_roles: roles(&["admin"]),
        test_max_lifetime: Some(3600),
        reason_max_chars: 200,
    }
}

/// The seed's access matrix: which roles may enter dev, stage, prod.
fn matrix() -> [EnvironmentPolicy; 3] {
    let env = |allowed: &[&str], reason: &[&str]| EnvironmentPolicy {
        allowed_roles: Some(roles(allowed)),
        reason_roles: roles(reason),
        ..Default::default()
    };
    [
        env(&["developer", "admin"], &[]),
        env(&["tester", "developer", "admin"], &[]),
        env(&["end_user", "developer", "admin"], &["developer"]),
    ]
}

fn check(
    identity: &Identity,
    env: u16,
    environment: &EnvironmentPolicy,
    route: &RoutePolicy,
    facts: &RequestFacts<'_>,
) -> Result<Permit, Reject> {
    let access = access();
    authorize(identity, &Binding { env: EnvId(env) }, &Policies { environment, route, access: &access }, facts)
}

#[test]
fn the_seed_matrix_holds_cell_by_cell() {
    let envs = matrix();
    let route = RoutePolicy::default();
    let table = [
        ("end_user", [false, false, true]),
        ("tester", [false, true, false]),
        ("developer", [true, true, true]),
        ("admin", [true, true, true]),
    ];
    for (role, cells) in table {
        for (env, allowed) in cells.iter().enumerate() {
            let got = check(&identity(&[role]), env as u16, &envs[env], &route, &facts("/x", Some(b"ticket 1")));
            assert_eq!(got.is_ok(), *allowed, "{role} in env {env}: {got:?}");
            if !allowed {
                assert_eq!(got, Err(Reject::RoleNotAllowed));
            }
        }
    }
}

#[test]
fn developers_on_prod_must_give_a_reason() {
    let prod = &matrix()[2];
    let route = RoutePolicy::default();
    let dev = identity(&["developer"]);
    assert_eq!(check(&dev, 2, prod, &route, &facts("/x", None)), Err(Reject::ReasonRequired));
    assert_eq!(check(&dev, 2, prod, &route, &facts("/x", Some(b"  \t "))), Err(Reject::ReasonRequired));
    let permit = check(&dev, 2, prod, &route, &facts("/x", Some(b"debugging issue #123"))).unwrap();
    assert_eq!(permit.access_reason(), Some("debugging issue #123"));
    // End users need none.
    assert!(check(&identity(&["end_user"]), 2, prod, &route, &facts("/x", None)).is_ok());
}

#[test]
fn admin_routes_need_an_admin_and_only_then_get_system_mode() {
    let env = EnvironmentPolicy::default();
    let route = RoutePolicy::default();
    assert_eq!(
        check(&identity(&["developer"]), 0, &env, &route, &facts("/admin/users", None)),
        Err(Reject::AdminRoleRequired)
    );
    assert!(check(&identity(&["admin"]), 0, &env, &route, &facts("/admin", None)).unwrap().system_mode());
    assert!(!check(&identity(&["admin"]), 0, &env, &route, &facts("/administrator", None)).unwrap().system_mode());
    assert!(!check(&identity(&["admin"]), 0, &env, &route, &facts("/api", None)).unwrap().system_mode());
}

#[test]
fn route_roles_any_all_and_per_environment() {
    let env = EnvironmentPolicy::default();
    let route = RoutePolicy {
        roles_any: roles(&["billing", "admin"]),
        roles_all: roles(&["mfa"]),
        roles_by_env: Box::new([(EnvId(1), roles(&["developer"]))]),
        critical: false,
    };
    assert!(check(&identity(&["billing", "mfa"]), 0, &env, &route, &facts("/x", None)).is_ok());
    assert_eq!(check(&identity(&["billing"]), 0, &env, &route, &facts("/x", None)), Err(Reject::RoleRequired));
    assert_eq!(check(&identity(&["mfa"]), 0, &env, &route, &facts("/x", None)), Err(Reject::RoleRequired));
    assert!(check(&identity(&["developer", "mfa"]), 1, &env, &route, &facts("/x", None)).is_ok());
    assert_eq!(check(&identity(&["billing", "mfa"]), 1, &env, &route, &facts("/x", None)), Err(Reject::RoleRequired));
}

#[test]
fn test_accounts_stay_off_critical_routes_and_within_their_lifetime() {
    let env = EnvironmentPolicy::default();
    let critical = RoutePolicy { critical: true, ..Default::default() };
    let plain = RoutePolicy::default();
    let mut t = identity(&["developer"]);
    t.test_account = true;
    t.issued_at = Some(1_000);
    t.expires_at = Some(1_000 + 600);
    assert_eq!(check(&t, 0, &env, &critical, &facts("/pay", None)), Err(Reject::TestAccountForbidden));
    assert!(check(&t, 0, &env, &plain, &facts("/x", None)).is_ok());
    t.expires_at = Some(1_000 + 7_200);
    assert_eq!(check(&t, 0, &env, &plain, &facts("/x", None)), Err(Reject::TestAccountLifetime));
    let mut regular = identity(&["developer"]);
    regular.expires_at = Some(1_000 + 7_200);
    assert!(check(&regular, 0, &env, &critical, &facts("/pay", None)).is_ok());
}

#[test]
fn report_only_serves_and_reports_but_never_grants_system_mode() {
    let env = EnvironmentPolicy { report_only: true, ..matrix()[2].clone() };
    let route = RoutePolicy::default();
    let permit = check(&identity(&["tester"]), 2, &env, &route, &facts("/admin/x", None)).unwrap();
    assert_eq!(permit.reported(), Some(Reject::RoleNotAllowed));
    assert!(!permit.system_mode());
    let permit = check(&identity(&["end_user"]), 2, &env, &route, &facts("/x", None)).unwrap();
    assert_eq!(permit.reported(), None);
}

#[test]
fn untrusted_issuers_are_refused_even_in_report_only() {
    let env = EnvironmentPolicy { trusted_issuers: Box::new([IssuerId(1)]), report_only: true, ..Default::default() };
    assert_eq!(
        check(&identity(&[]), 0, &env, &RoutePolicy::default(), &facts("/x", None)),
        Err(Reject::IssuerNotTrusted)
    );
    let mut id = identity(&[]);
    id.issuer = IssuerId(1);
    assert!(check(&id, 0, &env, &RoutePolicy::default(), &facts("/x", None)).is_ok());
}
