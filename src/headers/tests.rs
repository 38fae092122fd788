use super::*;
use crate::auth::IssuerId;

fn plan() -> HeaderPlan {
    let mut raw = file::Headers::default();
    raw.strip.push(Spanned::new(0..0, "X-Tenant-Id".to_owned()));
    HeaderPlan::compile(&raw).unwrap()
}

fn request(headers: &[(&str, &str)]) -> RequestHeader {
    let mut req = RequestHeader::build("GET", b"/", None).unwrap();
    for (k, v) in headers {
        req.append_header(k.to_string(), *v).unwrap();
    }
    req
}

fn identity() -> Identity {
    Identity {
        issuer: IssuerId(0),
        environment: Some("prod".into()),
        tenant: Some("acme".into()),
        user: Some("u-1".into()),
        roles: vec!["admin".into(), "dev".into()],
        ..Default::default()
    }
    .with_header_values()
}

#[test]
fn strips_case_variants_duplicates_underscores_and_prefix() {
    let plan = plan();
    let mut req = request(&[
        ("X-Isogate-Tenant", "evil"),
        ("x-isogate-tenant", "evil2"),
        ("X_ISOGATE_USER", "root"),
        ("x-isogate-anything-else", "1"),
        ("X-Tenant-Id", "evil"),
        ("x_tenant_id", "evil"),
        ("x-request-id", "spoof"),
        ("accept", "*/*"),
        ("x-isogatex", "kept"),
    ]);
    assert_eq!(plan.strip(&mut req), 7);
    let mut left: Vec<_> = req.headers.keys().map(|k| k.as_str().to_owned()).collect();
    left.sort();
    assert_eq!(left, vec!["accept", "x-isogatex"]);
}

#[test]
fn strip_removes_any_number_of_names_of_any_length() {
    let long = format!("x-isogate-{}", "l".repeat(200));
    for spoofed in [1usize, 8, 9, 40] {
        let names: Vec<String> = (0..spoofed).map(|i| format!("x-isogate-n{i}")).collect();
        let mut headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "evil")).collect();
        headers.push(("accept", "*/*"));
        headers.push(("x-isogate-n0", "again"));
        let mut req = request(&headers);
        assert_eq!(plan().strip(&mut req), spoofed + 1, "{spoofed} names");
        assert_eq!(req.headers.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["accept"], "{spoofed} names");
    }
    let mut req = request(&[("accept", "*/*"), (long.as_str(), "evil"), ("x-tenant-id", "evil")]);
    assert_eq!(plan().strip(&mut req), 2);
    assert_eq!(req.headers.len(), 1);
}

#[test]
fn strip_without_identity_headers_removes_nothing() {
    let mut req = request(&[("accept", "*/*"), ("user-agent", "curl")]);
    assert_eq!(plan().strip(&mut req), 0);
    assert_eq!(req.headers.len(), 2);
}

#[test]
fn inject_sets_only_verified_values_and_leaves_missing_claims_absent() {
    let plan = plan();
    let mut req = request(&[("authorization", "Bearer t")]);
    let mut id = identity();
    id.user = None;
    let id = id.with_header_values();
    let request_id = RequestId::from_client(&HeaderValue::from_static("r1")).unwrap();
    let env = HeaderValue::from_static("prod");
    let pool = HeaderValue::from_static("prod-main");
    let trusted = Trusted {
        identity: &id,
        environment: &env,
        pool: &pool,
        request_id: &request_id,
        forward_authorization: false,
        system_mode: false,
        db_schema: Some("company_42"),
        db_pool: None,
    };
    plan.inject(&mut req, &trusted).unwrap();
    assert_eq!(req.headers.get("x-isogate-db-schema").unwrap(), "company_42");
    assert_eq!(req.headers.get("x-isogate-system-mode"), None);
    assert_eq!(req.headers.get("x-isogate-db-pool"), None);
    let get = |k: &str| req.headers.get(k).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(get("x-isogate-environment").as_deref(), Some("prod"));
    assert_eq!(get("x-isogate-tenant").as_deref(), Some("acme"));
    assert_eq!(get("x-isogate-roles").as_deref(), Some("admin,dev"));
    assert_eq!(get("x-isogate-pool").as_deref(), Some("prod-main"));
    assert_eq!(get("x-request-id").as_deref(), Some("r1"));
    assert_eq!(get("x-isogate-user"), None);
    assert_eq!(get("x-isogate-test-account"), None);
    assert_eq!(get("authorization"), None);
    assert_eq!(get("x-isogate-db-schema").as_deref(), Some("company_42"));
    assert_eq!(get("x-isogate-system-mode"), None);
    assert_eq!(get("x-isogate-db-pool"), None);
}

#[test]
fn request_id_is_kept_only_when_single_and_safe() {
    let plan = plan();
    let id = |headers: &[(&str, &str)]| plan.client_request_id(&request(headers)).map(|r| r.as_str().to_owned());
    assert_eq!(id(&[("x-request-id", "abc-123.x")]).as_deref(), Some("abc-123.x"));
    assert_eq!(id(&[("x-request-id", "a b")]), None);
    assert_eq!(id(&[("x-request-id", "a"), ("x-request-id", "b")]), None);
    let long = "a".repeat(129);
    assert_eq!(id(&[("x-request-id", long.as_str())]), None);
}

#[test]
fn bad_names_are_config_errors() {
    let raw = file::Headers {
        tenant: Spanned::new(3..9, "x tenant".to_owned()),
        reserved_prefix: Spanned::new(0..0, "x".to_owned()),
        ..Default::default()
    };
    let errors = HeaderPlan::compile(&raw).unwrap_err();
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0].key, "headers.tenant");
    assert_eq!(errors[1].key, "headers.reserved_prefix");
}

/// Property: whatever identity headers a client sends, none of its values survive
/// strip-then-inject; every trusted header carries the verified value or is absent.
#[test]
fn strip_then_inject_never_leaks_client_values() {
    let plan = plan();
    let names = [
        "x-isogate-system-mode",
        "x-isogate-db-schema",
        "x-isogate-tenant",
        "X-ISOGATE-USER",
        "x_isogate_roles",
        "x-isogate-environment",
        "x-isogate-pool",
        "x-isogate-test-account",
        "x-tenant-id",
        "X_Tenant_Id",
        "x-isogate-zzz",
    ];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..500 {
        let mut headers = Vec::new();
        for name in names {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            for _ in 0..(seed % 3) {
                headers.push((name, "CLIENT-VALUE"));
            }
        }
        let mut req = request(&headers);
        plan.strip(&mut req);
        let mut id = identity();
        id.tenant = seed.is_multiple_of(2).then(|| "acme".to_owned());
        let env = HeaderValue::from_static("prod");
        let pool = HeaderValue::from_static("p");
        let trusted = Trusted {
            identity: &id,
            environment: &env,
            pool: &pool,
            request_id: &RequestId::generate(),
            forward_authorization: true,
            system_mode: seed.is_multiple_of(3),
            db_schema: None,
            db_pool: None,
        };
        plan.inject(&mut req, &trusted).unwrap();
        assert!(req.headers.values().all(|v| v != "CLIENT-VALUE"), "{:?}", req.headers);
    }
}
