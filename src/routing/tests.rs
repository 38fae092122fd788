use super::*;
use crate::auth::Identity;
use crate::bind::{Binding, EnvId};
use crate::policy::{authorize, AccessRules, EnvironmentPolicy, Policies, RequestFacts};

fn route(name: &str, hosts: &[&str], prefix: &str) -> Route {
    Route {
        name: name.into(),
        hosts: hosts.iter().map(|h| Box::from(*h)).collect(),
        path_prefix: prefix.into(),
        environment: RouteEnvironment::Inherit,
        forward_authorization: true,
        policy: RoutePolicy::default(),
        rewrite_prefix: None,
        rewrite_host: None,
        cost: 1,
        path_parameters: false,
        max_body_bytes: 1024,
        token_sources: None,
        forward_token_cookie: false,
        websocket: crate::websocket::Limits {
            idle: std::time::Duration::from_secs(300),
            max_lifetime: std::time::Duration::from_secs(86_400),
        },
        cors: None,
    }
}

fn permit(env: u16) -> Permit {
    let policies = Policies {
        environment: &EnvironmentPolicy::default(),
        route: &RoutePolicy::default(),
        access: &AccessRules::default(),
    };
    let facts = RequestFacts { path: "/", reason: None, now: 0 };
    authorize(&Identity::default(), &Binding { env: EnvId(env) }, &policies, &facts).unwrap()
}

#[test]
fn first_match_in_file_order_on_whole_segments() {
    let table = RouteTable::new(vec![
        route("admin", &["admin.example.com"], "/"),
        route("api", &[], "/api"),
        route("files", &[], "/files/"),
        route("root", &[], "/"),
    ]);
    let find = |h: Option<&str>, p: &str| table.find(h, p).map(|id| table.get(id).name.to_string());
    assert_eq!(find(Some("admin.example.com"), "/api/x").as_deref(), Some("admin"));
    assert_eq!(find(Some("x.example.com"), "/api").as_deref(), Some("api"));
    assert_eq!(find(None, "/api/v1/users").as_deref(), Some("api"));
    assert_eq!(find(None, "/api?x=1").as_deref(), Some("api"));
    assert_eq!(find(None, "/apix").as_deref(), Some("root"));
    assert_eq!(find(None, "/files/a").as_deref(), Some("files"));
    assert_eq!(find(None, "/files").as_deref(), Some("root"));
}

#[test]
fn no_route_without_a_match() {
    let table = RouteTable::new(vec![route("api", &["api.example.com"], "/api")]);
    assert_eq!(table.find(Some("api.example.com"), "/other"), None);
    assert_eq!(table.find(None, "/api"), None);
    assert_eq!(table.find(Some("evil.com"), "/api"), None);
}

#[test]
fn hosts_are_normalised() {
    assert_eq!(normalize_host("API.Example.com:8080").as_deref(), Some("api.example.com"));
    assert_eq!(normalize_host("api.example.com.").as_deref(), Some("api.example.com"));
    assert_eq!(normalize_host("[::1]:80").as_deref(), Some("[::1]"));
    assert_eq!(normalize_host("a b"), None);
    assert_eq!(normalize_host(""), None);
    assert_eq!(normalize_host("evil.com/x"), None);
}

#[test]
fn tenants_go_to_their_pool_or_the_default_or_are_refused() {
    let tenancy = vec![
        Tenancy {
            default_pool: Some(PoolId(0)),
            tenants: HashMap::from([("acme".into(), PoolId(1))]),
            ..Default::default()
        },
        Tenancy { default_pool: None, tenants: HashMap::from([("acme".into(), PoolId(2))]), ..Default::default() },
    ];
    assert_eq!(select(&permit(0), Some("acme"), &tenancy), Ok(PoolId(1)));
    assert_eq!(select(&permit(0), Some("globex"), &tenancy), Ok(PoolId(0)));
    assert_eq!(select(&permit(0), None, &tenancy), Ok(PoolId(0)));
    assert_eq!(select(&permit(1), Some("acme"), &tenancy), Ok(PoolId(2)));
    assert_eq!(select(&permit(1), Some("globex"), &tenancy), Err(Reject::TenantNotMapped));
    assert_eq!(select(&permit(1), None, &tenancy), Err(Reject::TenantNotMapped));
    assert_eq!(select(&permit(5), Some("acme"), &tenancy), Err(Reject::UnknownEnvironment));
}
