//! Access policy over real sockets: the seed's role matrix, access reasons, test
//! accounts, system mode, database hints, route rewrites, path normalisation and
//! report-only environments. Every refusal is checked for its status and reason and for
//! the fact that no upstream received anything.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::client::RawResponse;
use common::jws::{claims, now, token};
use common::upstream::Received;
use common::*;
use serde_json::{json, Value};

/// One echo upstream per environment; each environment's default pool is named alike.
const UPSTREAMS: [&str; 4] = ["dev-pool", "stage-pool", "prod-pool", "canary-pool"];

/// The enforcing environments, in matrix column order.
const ENVS: [&str; 3] = ["dev", "stage", "prod"];

/// The seed's access matrix: may this role enter dev, stage, prod?
const MATRIX: [(&str, [bool; 3]); 4] = [
    ("end_user", [false, false, true]),
    ("tester", [false, true, false]),
    ("developer", [true, true, true]),
    ("admin", [true, true, true]),
];

/// The seed's "may create test accounts" column, per environment.
const MAY_CREATE_TEST_ACCOUNTS: [(&str, [bool; 3]); 4] = [
    ("end_user", [false, false, false]),
    ("tester", [false, false, false]),
    ("developer", [false, true, true]),
    ("admin", [true, true, true]),
];

const REASON: &str = "debugging issue #123";

fn policy_config(ups: &Upstreams) -> String {
    let addr = |n: &str| ups.get(n).addr.to_string();
    format!(
        r#"
{PREAMBLE}
{RSA_ISSUER}
{HMAC_ISSUER}
[access]
admin_path_prefix = "/admin"
admin_roles = ["admin"]
test_account_subjects = ["qa-*@example.com"]
test_account_max_lifetime_seconds = 3600

[environments.dev]
hosts = ["dev.test"]
default_pool = "dev-pool"
allowed_roles = ["developer", "admin"]

[environments.stage]
hosts = ["stage.test"]
default_pool = "stage-pool"
allowed_roles = ["tester", "developer", "admin"]

[environments.prod]
hosts = ["prod.test"]
default_pool = "prod-pool"
allowed_roles = ["end_user", "developer", "admin"]
reason_required_roles = ["developer"]
db_schema = "company_{{tenant}}"
db_pool = "prod-eu-1"

[environments.canary]
hosts = ["canary.test"]
default_pool = "canary-pool"
issuers = ["rsa"]
allowed_roles = ["end_user"]
enforcement = "report_only"

[pools.dev-pool]
servers = ["{dev}"]

[pools.stage-pool]
servers = ["{stage}"]

[pools.prod-pool]
servers = ["{prod}"]

[pools.canary-pool]
servers = ["{canary}"]

[[routes]]
name = "billing"
path_prefix = "/billing"
critical = true

[[routes]]
name = "reports"
path_prefix = "/reports"
roles_any = ["analyst", "admin"]

[[routes]]
name = "docs"
path_prefix = "/docs"
rewrite_prefix = "/collections/documents_{{env}}"

[[routes]]
name = "files"
path_prefix = "/files"
rewrite_prefix = "/buckets/{{tenant}}"
rewrite_host = "{{tenant}}.store.internal"

[[routes]]
name = "test-accounts"
path_prefix = "/test-accounts"
roles_by_environment = {{ dev = ["admin"], stage = ["developer", "admin"], prod = ["developer", "admin"] }}

[[routes]]
name = "default"
path_prefix = "/"
"#,
        dev = addr("dev-pool"),
        stage = addr("stage-pool"),
        prod = addr("prod-pool"),
        canary = addr("canary-pool"),
    )
}

/// Claims for `env` and `tenant` with exactly `roles`.
fn claims_with(env: &str, tenant: &str, roles: &[&str]) -> Value {
    let mut c = claims(env, tenant);
    c["roles"] = json!(roles);
    c
}

/// An RS256 token for `env`, tenant `acme`, holding `roles`.
fn token_for(env: &str, roles: &[&str]) -> String {
    token("RS256", claims_with(env, "acme", roles))
}

fn host(env: &str) -> String {
    format!("{env}.test")
}

/// Asserts the `error` reason and status of a refusal.
fn assert_refusal(r: &RawResponse, status: u16, reason: &str, what: &str) {
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (status, Some(reason)),
        "{what}: body {}",
        String::from_utf8_lossy(&r.body)
    );
}

/// An upstream request header by name, with `_` and `-` treated alike.
fn header_like<'a>(got: &'a Received, name: &str) -> Vec<&'a str> {
    got.headers.iter().filter(|(k, _)| k.replace('_', "-") == name).map(|(_, v)| v.as_str()).collect()
}

/// A gateway on the policy config with its four echo upstreams.
struct Fixture {
    gw: Gateway,
    ups: Upstreams,
}

impl Fixture {
    fn start() -> Self {
        let ups = Upstreams::start(&UPSTREAMS);
        let gw = Gateway::start(&policy_config(&ups), &[]);
        Self { gw, ups }
    }

    /// A GET to `env`'s host with a bearer `token` and extra headers.
    fn call(&self, env: &str, path: &str, token: &str, extra: &[(&str, &str)]) -> RawResponse {
        let auth = format!("Bearer {token}");
        let mut headers = vec![("authorization", auth.as_str())];
        headers.extend_from_slice(extra);
        self.gw.get(&host(env), path, &headers)
    }

    /// Raw request bytes: `GET path` to `env`'s host with the token and `extra` header
    /// lines (each ending in CRLF).
    fn raw(&self, env: &str, path: &str, token: &str, extra: &[u8]) -> RawResponse {
        let mut raw = format!(
            "GET {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\nauthorization: Bearer {token}\r\n",
            host(env)
        )
        .into_bytes();
        raw.extend_from_slice(extra);
        raw.extend_from_slice(b"\r\n");
        self.gw.send_raw(&raw).unwrap()
    }

    /// Runs `send`, asserts it was refused with `status`/`reason` and that no upstream
    /// received anything; returns the response.
    fn refused(&self, status: u16, reason: &str, what: &str, send: impl FnOnce() -> RawResponse) -> RawResponse {
        let before = self.ups.total();
        let r = send();
        assert_refusal(&r, status, reason, what);
        assert_eq!(self.ups.total(), before, "{what}: a refused request reached an upstream");
        r
    }

    /// Runs `send`, asserts a 200 from `upstream`, that exactly one request reached an
    /// upstream (that one), and returns the response and what the upstream received.
    fn served(&self, upstream: &str, what: &str, send: impl FnOnce() -> RawResponse) -> (RawResponse, Received) {
        let before = self.ups.total();
        let seen = self.ups.get(upstream).count();
        let r = send();
        assert_eq!(
            (r.status, r.json()["upstream"].as_str()),
            (200, Some(upstream)),
            "{what}: body {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(self.ups.total(), before + 1, "{what}: one upstream request");
        let got = self.ups.get(upstream).received();
        assert_eq!(got.len(), seen + 1, "{what}: it went to {upstream}");
        (r, got.last().unwrap().clone())
    }

    fn audit(&self, r: &RawResponse) -> Value {
        self.gw.audit_for(&request_id(r))
    }

    fn metric(&self, prefix: &str) -> f64 {
        self.gw.metric(prefix).unwrap_or(0.0)
    }
}

fn pool_of(env: &str) -> String {
    format!("{env}-pool")
}

#[test]
fn the_access_matrix_holds_cell_by_cell_over_real_sockets() {
    let f = Fixture::start();
    for (role, cells) in MATRIX {
        for (env, allowed) in ENVS.into_iter().zip(cells) {
            let t = token_for(env, &[role]);
            let what = format!("{role} on {env}");
            // Everyone gives a reason on prod, so the developers' reason rule does not interfere.
            let reason: &[(&str, &str)] = if env == "prod" { &[("x-access-reason", REASON)] } else { &[] };
            if allowed {
                let (r, got) = f.served(&pool_of(env), &what, || f.call(env, "/api/orders", &t, reason));
                assert_eq!(r.json()["trusted_headers"]["x-isogate-environment"], env);
                assert_eq!(got.header("x-isogate-roles"), Some(role), "{what}");
            } else {
                let r = f.refused(403, "role_not_allowed", &what, || f.call(env, "/api/orders", &t, reason));
                let line = f.audit(&r);
                assert_eq!(
                    (&line["environment"], &line["decision"], &line["reason"]),
                    (&json!(env), &json!("deny"), &json!("role_not_allowed")),
                    "{what}"
                );
            }
        }
    }
    // A caller holding one allowed role among others is admitted; no role at all is not.
    let (_, got) = f.served("dev-pool", "tester+developer on dev", || {
        f.call("dev", "/x", &token_for("dev", &["tester", "developer"]), &[])
    });
    assert_eq!(got.header("x-isogate-roles"), Some("tester,developer"));
    f.refused(403, "role_not_allowed", "no roles on stage", || f.call("stage", "/x", &token_for("stage", &[]), &[]));
    assert_eq!(f.metric(r#"isogate_rejections_total{reason="role_not_allowed"}"#), 5.0);

    // The "may create test accounts" column: the environment matrix applies first, then
    // the route's per-environment roles.
    for ((role, may_enter), (_, may_create)) in MATRIX.into_iter().zip(MAY_CREATE_TEST_ACCOUNTS) {
        for ((env, enter), create) in ENVS.into_iter().zip(may_enter).zip(may_create) {
            let t = token_for(env, &[role]);
            let what = format!("{role} creating test accounts on {env}");
            let reason = [("x-access-reason", REASON)];
            let send = || f.call(env, "/test-accounts/new", &t, &reason);
            match (enter, create) {
                (true, true) => {
                    let (r, _) = f.served(&pool_of(env), &what, send);
                    assert_eq!(f.audit(&r)["route"], "test-accounts");
                }
                (true, false) => {
                    f.refused(403, "role_required", &what, send);
                }
                (false, _) => {
                    f.refused(403, "role_not_allowed", &what, send);
                }
            }
        }
    }
    // roles_any: one of the listed roles is needed on top of the environment's matrix.
    f.refused(403, "role_required", "analyst-less end_user on /reports", || {
        f.call("prod", "/reports/q1", &token_for("prod", &["end_user"]), &[])
    });
    f.served("prod-pool", "end_user+analyst on /reports", || {
        f.call("prod", "/reports/q1", &token_for("prod", &["end_user", "analyst"]), &[])
    });
}

#[test]
fn prod_developers_must_give_a_clean_access_reason() {
    let f = Fixture::start();
    let dev = token_for("prod", &["developer"]);
    let reasons = r#"isogate_access_reasons_total{environment="prod"}"#;

    f.refused(403, "reason_required", "no reason", || f.call("prod", "/api", &dev, &[]));
    for blank in ["", "   ", "\t \t"] {
        f.refused(403, "reason_required", &format!("blank {blank:?}"), || {
            f.call("prod", "/api", &dev, &[("x-access-reason", blank)])
        });
    }
    // Two reason headers are not one reason.
    f.refused(403, "reason_required", "two reasons", || {
        f.call("prod", "/api", &dev, &[("x-access-reason", REASON), ("x-access-reason", REASON)])
    });
    // The rule is per role and per environment.
    f.served("prod-pool", "end_user without a reason", || {
        f.call("prod", "/api", &token_for("prod", &["end_user"]), &[])
    });
    f.served("stage-pool", "developer on stage without a reason", || {
        f.call("stage", "/api", &token_for("stage", &["developer"]), &[])
    });
    assert_eq!(f.metric(reasons), 0.0, "refused requests count no reason");

    let (r, _) =
        f.served("prod-pool", "with a reason", || f.call("prod", "/api", &dev, &[("X-Access-Reason", REASON)]));
    let line = f.audit(&r);
    assert_eq!(line["access_reason"], REASON);
    assert_eq!(line["decision"], "allow");
    assert_eq!(f.metric(reasons), 1.0);

    // An oversized reason is served and audited cut to 200 characters.
    let long = "ticket-4711 ".repeat(420);
    assert!(long.len() > 5000);
    let (r, _) = f.served("prod-pool", "oversized reason", || {
        f.call("prod", "/api", &dev, &[("x-access-reason", long.as_str())])
    });
    let audited = f.audit(&r)["access_reason"].as_str().unwrap().to_owned();
    assert_eq!(audited.chars().count(), 200);
    assert_eq!(audited, long[..200].trim_end());
    assert_eq!(f.metric(reasons), 2.0);

    // Control characters never reach the audit line: tab sent raw, C1 controls (ESC's
    // 8-bit twin CSI, NEL) as UTF-8, which an HTTP/1.1 header value may carry.
    let (r, _) = f.served("prod-pool", "control characters", || {
        f.raw("prod", "/api", &dev, "x-access-reason: \tissue\t#9 \u{9b}31mred\u{85}done\t\r\n".as_bytes())
    });
    assert_eq!(f.audit(&r)["access_reason"], "issue #9 31mred done", "tab and NEL become spaces, CSI is dropped");
    assert_eq!(f.metric(reasons), 3.0);
}

#[test]
fn raw_escape_and_del_in_a_reason_are_refused_by_the_http_parser() {
    // ESC and DEL are not valid in an HTTP/1.1 header value: the request is refused
    // before it is admitted, so nothing reaches an upstream or the audit trail raw.
    let f = Fixture::start();
    let dev = token_for("prod", &["developer"]);
    for raw in [&b"x-access-reason: a\x1b[31mb\r\n"[..], &b"x-access-reason: a\x7fb\r\n"[..]] {
        let before = f.ups.total();
        let r = f.raw("prod", "/api", &dev, raw);
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(raw).escape_debug());
        assert_eq!(f.ups.total(), before, "a malformed request went upstream");
    }
    let audit = std::fs::read(&f.gw.audit_path).unwrap_or_default();
    assert!(!audit.iter().any(|b| *b == 0x1b || *b == 0x7f), "raw control bytes in the audit file");
}

#[test]
fn test_accounts_stay_off_critical_routes_and_short_lived() {
    let f = Fixture::start();
    let mut flagged = claims_with("stage", "acme", &["tester"]);
    flagged["is_test_account"] = json!(true);
    let mut by_subject = claims_with("stage", "acme", &["tester"]);
    by_subject["sub"] = json!("qa-7@example.com");

    for (kind, c) in [("flagged", &flagged), ("by subject", &by_subject)] {
        let t = token("RS256", c.clone());
        f.refused(403, "test_account_forbidden", kind, || f.call("stage", "/billing/invoices", &t, &[]));
        let (r, got) =
            f.served("stage-pool", kind, || f.call("stage", "/orders", &t, &[("x-isogate-test-account", "false")]));
        assert_eq!(got.header_values("x-isogate-test-account"), vec!["true"]);
        let line = f.audit(&r);
        assert_eq!((&line["test_account"], &line["route"]), (&json!(true), &json!("default")));

        // A test-account token living longer than an hour is refused everywhere.
        let mut long = c.clone();
        long["iat"] = json!(now() - 3600);
        long["exp"] = json!(now() + 3600);
        f.refused(403, "test_account_lifetime", kind, || f.call("stage", "/orders", &token("RS256", long), &[]));
    }

    // Neither rule touches ordinary accounts: a near-miss subject, and a long-lived token.
    let mut regular = claims_with("stage", "acme", &["tester"]);
    regular["sub"] = json!("qa-7@example.org");
    regular["iat"] = json!(now() - 3600);
    regular["exp"] = json!(now() + 3600);
    let (r, got) = f.served("stage-pool", "regular account", || {
        f.call("stage", "/billing/invoices", &token("RS256", regular), &[("x-isogate-test-account", "true")])
    });
    assert!(header_like(&got, "x-isogate-test-account").is_empty());
    assert_eq!(f.audit(&r)["test_account"], false);

    let count = |decision: &str, route: &str, class: &str, account: &str| {
        f.metric(&format!(
            r#"isogate_requests_total{{account="{account}",decision="{decision}",environment="stage",route="{route}",status_class="{class}"}}"#
        ))
    };
    assert_eq!(count("allow", "default", "2xx", "test"), 2.0);
    assert_eq!(count("deny", "billing", "4xx", "test"), 2.0);
    assert_eq!(count("deny", "default", "4xx", "test"), 2.0);
    assert_eq!(count("allow", "billing", "2xx", "regular"), 1.0);
    assert_eq!(count("allow", "default", "2xx", "regular"), 0.0);
}

#[test]
fn system_mode_is_for_admins_on_admin_routes_only() {
    let f = Fixture::start();
    let admin = token_for("dev", &["admin"]);
    let developer = token_for("dev", &["developer"]);
    let spoof: &[(&str, &str)] = &[("x-isogate-system-mode", "true"), ("X_Isogate_System_Mode", "true")];

    for path in ["/admin", "/admin/users", "/admin/"] {
        let (r, got) = f.served("dev-pool", path, || f.call("dev", path, &admin, spoof));
        assert_eq!(header_like(&got, "x-isogate-system-mode"), vec!["true"], "{path}");
        assert_eq!(f.audit(&r)["system_mode"], true, "{path}");
    }
    for path in ["/admin", "/admin/users", "/admin/../admin/x"] {
        let r = f.refused(403, "admin_role_required", path, || f.call("dev", path, &developer, spoof));
        assert_eq!(f.audit(&r)["system_mode"], false);
    }
    // Off the admin prefix nobody gets system mode, whatever the client sends; the
    // prefix matches whole segments.
    for (who, t) in [("admin", &admin), ("developer", &developer)] {
        for path in ["/api/x", "/administrator", "/x/admin"] {
            let what = format!("{who} on {path}");
            let (r, got) = f.served("dev-pool", &what, || f.call("dev", path, t, spoof));
            assert!(header_like(&got, "x-isogate-system-mode").is_empty(), "{what}: {:?}", got.headers);
            assert_eq!(f.audit(&r)["system_mode"], false, "{what}");
        }
    }
}

#[test]
fn prod_requests_carry_db_hints_and_hostile_tenants_are_refused() {
    let f = Fixture::start();
    let spoof: &[(&str, &str)] = &[("x-isogate-db-schema", "public"), ("X_Isogate_Db_Pool", "prod-us-9")];
    for tenant in [json!("42"), json!(42)] {
        let mut c = claims_with("prod", "x", &["end_user"]);
        c["tenant"] = tenant.clone();
        let what = format!("tenant {tenant}");
        let (r, got) = f.served("prod-pool", &what, || f.call("prod", "/api", &token("RS256", c), spoof));
        assert_eq!(header_like(&got, "x-isogate-db-schema"), vec!["company_42"]);
        assert_eq!(header_like(&got, "x-isogate-db-pool"), vec!["prod-eu-1"]);
        assert_eq!(f.audit(&r)["db_schema"], "company_42");
    }
    // Environments without hints send none (and still strip the client's).
    let (r, got) = f.served("stage-pool", "stage", || f.call("stage", "/api", &token_for("stage", &["tester"]), spoof));
    assert!(header_like(&got, "x-isogate-db-schema").is_empty());
    assert!(header_like(&got, "x-isogate-db-pool").is_empty());
    assert_eq!(f.audit(&r)["db_schema"], Value::Null);

    // The longest tenant that still renders a valid schema name (63 characters).
    let longest = "a".repeat(55);
    let (_, got) = f.served("prod-pool", "55-char tenant", || {
        f.call("prod", "/api", &token("RS256", claims_with("prod", &longest, &["end_user"])), &[])
    });
    assert_eq!(got.header("x-isogate-db-schema"), Some(format!("company_{longest}").as_str()));

    // Values that cannot travel in a header at all fail as claims (401); values that
    // are header-safe but not template- or schema-safe are refused by placement (403).
    let a200 = "a".repeat(200);
    let a56 = "a".repeat(56);
    let cases: [(&str, u16, &str); 10] = [
        ("1; DROP", 401, "claim_invalid"),
        ("ü", 401, "claim_invalid"),
        ("1;DROP", 403, "tenant_value_unsafe"),
        ("../x", 403, "tenant_value_unsafe"),
        ("a.b", 403, "tenant_value_unsafe"),
        (&a200, 403, "tenant_value_unsafe"),
        (&a56, 403, "tenant_value_unsafe"),
        ("Acme", 403, "tenant_value_unsafe"),
        ("a-b", 403, "tenant_value_unsafe"),
        ("x'or'1", 403, "tenant_value_unsafe"),
    ];
    for (tenant, status, reason) in cases {
        let t = token("RS256", claims_with("prod", tenant, &["end_user"]));
        let what = format!("tenant {tenant:?}");
        let r = f.refused(status, reason, &what, || f.call("prod", "/api", &t, &[]));
        let line = f.audit(&r);
        assert_eq!(line["db_schema"], Value::Null, "{what}");
        assert_eq!(line["reason"], reason, "{what}");
    }
    // A missing tenant cannot render the schema either.
    let mut c = claims_with("prod", "x", &["end_user"]);
    c.as_object_mut().unwrap().remove("tenant");
    f.refused(401, "tenant_missing", "no tenant", || f.call("prod", "/api", &token("RS256", c), &[]));
    // The same hostile tenants are fine where nothing renders them.
    f.served("stage-pool", "Acme on stage", || {
        f.call("stage", "/api", &token("RS256", claims_with("stage", "Acme", &["tester"])), &[])
    });
}

#[test]
fn routes_rewrite_paths_and_hosts_from_verified_values() {
    let f = Fixture::start();
    let prod = token_for("prod", &["end_user"]);
    let stage = token_for("stage", &["tester"]);

    let cases = [
        ("prod", &prod, "/docs/a/b", "/collections/documents_prod/a/b"),
        ("prod", &prod, "/docs", "/collections/documents_prod"),
        ("prod", &prod, "/docs/a?q=1", "/collections/documents_prod/a?q=1"),
        ("prod", &prod, "/docs//a/./b/../c?x=../y", "/collections/documents_prod/a/c?x=../y"),
        ("stage", &stage, "/docs/a", "/collections/documents_stage/a"),
        ("prod", &prod, "/files/x", "/buckets/acme/x"),
        ("stage", &stage, "/files/x/y.txt?v=2", "/buckets/acme/x/y.txt?v=2"),
        ("stage", &stage, "/filesystem", "/filesystem"),
    ];
    for (env, t, path, upstream_path) in cases {
        let what = format!("{path} on {env}");
        let (_, got) = f.served(&pool_of(env), &what, || f.call(env, path, t, &[]));
        assert_eq!(got.path, upstream_path, "{what}");
        let expected_host =
            if upstream_path.starts_with("/buckets/") { "acme.store.internal".to_owned() } else { host(env) };
        assert_eq!(got.header_values("host"), vec![expected_host.as_str()], "{what}");
    }

    // The tenant renders into the host lowercased, into the path as it is.
    let (_, got) = f.served("stage-pool", "tenant Acme", || {
        f.call("stage", "/files/x", &token("RS256", claims_with("stage", "Acme", &["tester"])), &[])
    });
    assert_eq!((got.path.as_str(), got.header("host")), ("/buckets/Acme/x", Some("acme.store.internal")));

    // Tenants that could climb out of their bucket or host are refused.
    for tenant in ["a.b", "../../x", "a/b", "..", "evil.com#"] {
        let t = token("RS256", claims_with("stage", tenant, &["tester"]));
        let what = format!("tenant {tenant:?} on /files");
        f.refused(403, "tenant_value_unsafe", &what, || f.call("stage", "/files/x", &t, &[]));
        // Routes that do not render the tenant serve it.
        f.served("stage-pool", &format!("tenant {tenant:?} on /docs"), || f.call("stage", "/docs/x", &t, &[]));
    }
    let mut c = claims_with("stage", "x", &["tester"]);
    c.as_object_mut().unwrap().remove("tenant");
    f.refused(401, "tenant_missing", "no tenant on /files", || f.call("stage", "/files/x", &token("RS256", c), &[]));
}

#[test]
fn path_tricks_never_reach_an_upstream_as_an_admin_path() {
    let f = Fixture::start();
    let developer = token_for("dev", &["developer"]);
    let admin = token_for("dev", &["admin"]);

    // Paths that normalise onto the admin prefix get the admin rule.
    for path in [
        "//admin/x",
        "/x/../admin/y",
        "/api/%2e%2e/admin/x",
        "/api/%2E%2E/admin",
        "/api/.%2e/admin",
        "/./admin",
        "/admin/./x",
        "///admin//x",
    ] {
        f.refused(403, "admin_role_required", path, || f.call("dev", path, &developer, &[]));
    }
    // Paths whose meaning would depend on the upstream's decoder are refused outright.
    for path in [
        "/%2e%2e/admin",
        "/..",
        "/x/../../admin",
        "/admin%2fx",
        "/x%2Fadmin",
        "/a%5cb",
        "/a\\b",
        "/a\\..\\admin",
        "/a%00",
        "/a%zz",
        "/a%2",
    ] {
        for (who, t) in [("developer", &developer), ("admin", &admin)] {
            let what = format!("{who} on {path}");
            f.refused(400, "ambiguous_path", &what, || f.raw("dev", path, t, b""));
        }
    }

    // Allowed requests reach the upstream on the normalised path, query untouched.
    let cases = [
        ("/x//y/./z", "/x/y/z"),
        ("/x/%2e/y", "/x/y"),
        ("/x/y/..", "/x/"),
        ("/x//y?a=../b&c=%2f", "/x/y?a=../b&c=%2f"),
        ("/a%20b/./c", "/a%20b/c"),
    ];
    for (path, upstream_path) in cases {
        let (_, got) = f.served("dev-pool", path, || f.call("dev", path, &developer, &[]));
        assert_eq!(got.path, upstream_path, "{path}");
    }
    // An admin reaching the admin prefix through a trick gets the normalised path and
    // system mode, so the backend sees the same resource the gateway authorised.
    let (r, got) = f.served("dev-pool", "admin via //admin", || f.call("dev", "/x/..//admin/./users", &admin, &[]));
    assert_eq!(got.path, "/admin/users");
    assert_eq!(got.header("x-isogate-system-mode"), Some("true"));
    assert_eq!(f.audit(&r)["system_mode"], true);
}

#[test]
fn percent_encoded_letters_do_not_bypass_the_admin_prefix() {
    let f = Fixture::start();
    let developer = token_for("dev", &["developer"]);
    for path in ["/%61dmin/x", "/%61%64%6d%69%6e", "/adm%69n/users"] {
        let before = f.ups.total();
        let r = f.call("dev", path, &developer, &[]);
        assert!(
            matches!(
                (r.status, r.json()["error"].as_str()),
                (403, Some("admin_role_required")) | (400, Some("ambiguous_path"))
            ),
            "{path}: got {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(f.ups.total(), before, "{path} reached the upstream");
    }
}

#[test]
fn report_only_serves_and_reports_what_enforce_would_refuse() {
    let f = Fixture::start();
    let report = |reason: &str| {
        f.metric(&format!(r#"isogate_policy_report_only_total{{environment="canary",reason="{reason}"}}"#))
    };

    // A tester may not enter canary: served, and reported.
    let tester = token_for("canary", &["tester"]);
    let (r, got) = f.served("canary-pool", "tester on canary", || f.call("canary", "/api/x", &tester, &[]));
    assert_eq!(got.header("x-isogate-environment"), Some("canary"));
    let line = f.audit(&r);
    assert_eq!(line["report_only"], "role_not_allowed");
    assert_eq!(line["decision"], "allow");
    assert_eq!(line["reason"], "ok");
    assert_eq!(line["status"], 200);
    assert_eq!(report("role_not_allowed"), 1.0);
    // The same request where the rules are enforced.
    f.refused(403, "role_not_allowed", "tester on prod", || {
        f.call("prod", "/api/x", &token_for("prod", &["tester"]), &[])
    });

    // An allowed caller is not reported.
    let end_user = token_for("canary", &["end_user"]);
    let (r, _) = f.served("canary-pool", "end_user on canary", || f.call("canary", "/api/x", &end_user, &[]));
    assert_eq!(f.audit(&r)["report_only"], Value::Null);

    // System mode only when every rule passes: end_user+admin passes, admin alone
    // breaks the matrix (reported, served without system mode), end_user alone breaks
    // the admin rule.
    let cases = [
        (&["end_user", "admin"][..], None),
        (&["admin"][..], Some("role_not_allowed")),
        (&["end_user"][..], Some("admin_role_required")),
    ];
    for (roles, reported) in cases {
        let what = format!("{roles:?} on canary /admin");
        let (r, got) = f.served("canary-pool", &what, || {
            f.call("canary", "/admin/users", &token_for("canary", roles), &[("x-isogate-system-mode", "true")])
        });
        let line = f.audit(&r);
        assert_eq!(line["report_only"], json!(reported), "{what}");
        let system_mode = reported.is_none();
        assert_eq!(line["system_mode"], system_mode, "{what}");
        let expected: Vec<&str> = if system_mode { vec!["true"] } else { vec![] };
        assert_eq!(header_like(&got, "x-isogate-system-mode"), expected, "{what}");
    }
    assert_eq!(report("role_not_allowed"), 2.0);
    assert_eq!(report("admin_role_required"), 1.0);
    // Enforced, a caller outside the matrix is refused on the same path.
    f.refused(403, "role_not_allowed", "tester on dev /admin", || {
        f.call("dev", "/admin/users", &token_for("dev", &["tester"]), &[])
    });

    // Route and test-account rules are reported too.
    f.served("canary-pool", "end_user on /reports", || f.call("canary", "/reports/q1", &end_user, &[]));
    assert_eq!(report("role_required"), 1.0);
    let mut test = claims_with("canary", "acme", &["end_user"]);
    test["sub"] = json!("qa-1@example.com");
    let (r, got) = f.served("canary-pool", "test account on /billing", || {
        f.call("canary", "/billing/pay", &token("RS256", test), &[])
    });
    assert_eq!(got.header("x-isogate-test-account"), Some("true"));
    assert_eq!(f.audit(&r)["report_only"], "test_account_forbidden");
    assert_eq!(report("test_account_forbidden"), 1.0);

    // Report-only covers the access rules, not trust or binding.
    let mut hmac = claims_with("canary", "acme", &["end_user"]);
    hmac["iss"] = json!("https://hmac.test");
    f.refused(403, "issuer_not_trusted", "hmac token on canary", || {
        f.call("canary", "/api/x", &token("HS256", hmac), &[])
    });
    f.refused(403, "wrong_environment", "prod token on canary", || {
        f.call("canary", "/api/x", &token_for("prod", &["end_user"]), &[])
    });
    assert_eq!(f.metric(r#"isogate_policy_report_only_total{environment="prod",reason="role_not_allowed"}"#), 0.0);
}
