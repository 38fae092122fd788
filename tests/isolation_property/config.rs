//! The configuration under test, twice: as the TOML the gateway compiles, and as plain
//! tables the model reads. The two are written by hand, side by side, so a gateway that
//! reads its file differently from what the README says disagrees with the model.

use std::path::Path;

/// Where a route takes its environment from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteEnv {
    /// The host's environment, else the listener's.
    Inherit,
    /// This environment.
    Fixed(&'static str),
    /// The token's environment claim.
    FromToken,
}

/// One `[environments.NAME]`.
#[derive(Debug)]
pub struct Env {
    pub name: &'static str,
    pub hosts: &'static [&'static str],
    /// Bound by the dev listener.
    pub listener: bool,
    pub default_pool: Option<&'static str>,
    pub refuse_unmapped: bool,
    pub tenant_required: bool,
    /// Trusted issuer names; empty trusts every issuer.
    pub issuers: &'static [&'static str],
    pub allowed_roles: Option<&'static [&'static str]>,
    /// Tenant → silo pool.
    pub tenants: &'static [(&'static str, &'static str)],
    pub db_schema: Option<&'static str>,
    pub db_pool: Option<&'static str>,
}

/// One `[pools.NAME]`; every pool belongs to exactly one environment.
#[derive(Debug)]
pub struct Pool {
    pub name: &'static str,
    pub env: &'static str,
    pub db_schema: Option<&'static str>,
    pub db_pool: Option<&'static str>,
}

/// One `[[routes]]`, in file order.
#[derive(Debug)]
pub struct Route {
    pub name: &'static str,
    pub hosts: &'static [&'static str],
    pub prefix: &'static str,
    pub env: RouteEnv,
    pub forward_authorization: bool,
    pub roles_any: &'static [&'static str],
    pub parameters: bool,
    pub rewrite_prefix: Option<&'static str>,
    pub rewrite_host: Option<&'static str>,
}

pub const ADMIN_PREFIX: &str = "/admin";
pub const ADMIN_ROLES: &[&str] = &["admin", "ops"];
pub const RESERVED_PREFIX: &str = "x-isogate-";
/// `[headers]`: the trusted names (lowercase) and the extra strip names.
pub const H_ENV: &str = "x-isogate-environment";
pub const H_TENANT: &str = "x-tenant-id";
pub const H_USER: &str = "x-user-id";
pub const H_ROLES: &str = "x-roles";
pub const H_TEST: &str = "x-isogate-test-account";
pub const H_POOL: &str = "x-isogate-pool";
pub const H_REQUEST_ID: &str = "x-request-id";
pub const H_SYSTEM: &str = "x-isogate-system-mode";
pub const H_SCHEMA: &str = "x-isogate-db-schema";
pub const H_DB_POOL: &str = "x-isogate-db-pool";
pub const TRUSTED: &[&str] =
    &[H_ENV, H_TENANT, H_USER, H_ROLES, H_TEST, H_POOL, H_REQUEST_ID, H_SYSTEM, H_SCHEMA, H_DB_POOL];
pub const EXTRA_STRIP: &[&str] = &["x-forwarded-user", "x-auth-request-email", "remote-user"];
/// `[forwarded] trusted_proxies`.
pub const TRUSTED_PROXIES: (u8, u8) = (10, 8);
pub const AUDIENCE: &str = "isogate-tests";
pub const PARTNER_AUDIENCE: &str = "partner-api";
pub const MAX_TOKEN_BYTES: usize = 8192;
pub const MAX_URI_BYTES: usize = 8192;

pub const ENVS: &[Env] = &[
    Env {
        name: "dev",
        hosts: &[],
        listener: true,
        default_pool: None,
        refuse_unmapped: true,
        tenant_required: true,
        issuers: &["hmac"],
        allowed_roles: None,
        tenants: &[("acme", "dev-acme"), ("initech", "dev-initech")],
        db_schema: Some("dev_{tenant}"),
        db_pool: None,
    },
    Env {
        name: "stage",
        hosts: &["stage.test", "stage-alt.test"],
        listener: false,
        default_pool: Some("stage-shared"),
        refuse_unmapped: false,
        tenant_required: false,
        issuers: &["hmac", "partner", "ec"],
        allowed_roles: None,
        tenants: &[("globex", "stage-globex")],
        db_schema: None,
        db_pool: None,
    },
    Env {
        name: "prod",
        hosts: &["prod.test", "api.prod.test"],
        listener: false,
        default_pool: Some("prod-shared"),
        refuse_unmapped: false,
        tenant_required: true,
        issuers: &[],
        allowed_roles: Some(&["user", "admin", "support", "analyst"]),
        tenants: &[("globex", "prod-globex"), ("umbrella", "prod-umbrella"), ("42", "prod-umbrella")],
        db_schema: Some("company_{tenant}"),
        db_pool: Some("prod-{env}-main"),
    },
    Env {
        name: "qa",
        hosts: &["qa.test"],
        listener: false,
        default_pool: Some("qa-shared"),
        refuse_unmapped: false,
        tenant_required: true,
        issuers: &["rsa", "ec", "partner"],
        allowed_roles: None,
        tenants: &[("globex", "qa-globex"), ("acme", "qa-globex")],
        db_schema: Some("qa_{sub}"),
        db_pool: None,
    },
];

pub const POOLS: &[Pool] = &[
    Pool { name: "dev-acme", env: "dev", db_schema: None, db_pool: None },
    Pool { name: "dev-initech", env: "dev", db_schema: None, db_pool: None },
    Pool { name: "stage-shared", env: "stage", db_schema: None, db_pool: None },
    Pool { name: "stage-globex", env: "stage", db_schema: Some("stage_{tenant}"), db_pool: Some("stage-db-{tenant}") },
    Pool { name: "prod-shared", env: "prod", db_schema: None, db_pool: None },
    Pool { name: "prod-globex", env: "prod", db_schema: Some("globex_main"), db_pool: None },
    Pool { name: "prod-umbrella", env: "prod", db_schema: None, db_pool: None },
    Pool { name: "qa-shared", env: "qa", db_schema: None, db_pool: None },
    Pool { name: "qa-globex", env: "qa", db_schema: Some("qa_globex"), db_pool: None },
];

const fn route(name: &'static str, prefix: &'static str) -> Route {
    Route {
        name,
        hosts: &[],
        prefix,
        env: RouteEnv::Inherit,
        forward_authorization: true,
        roles_any: &[],
        parameters: false,
        rewrite_prefix: None,
        rewrite_host: None,
    }
}

pub const ROUTES: &[Route] = &[
    Route { hosts: &["any.test"], env: RouteEnv::FromToken, ..route("by-token", "/") },
    Route { hosts: &["matrix.test"], env: RouteEnv::Fixed("prod"), parameters: true, ..route("matrix-host", "/") },
    Route { rewrite_prefix: Some("/t/{tenant}"), ..route("files", "/files") },
    Route { rewrite_host: Some("{tenant}.store.internal"), ..route("store", "/store") },
    Route { roles_any: &["analyst", "admin"], ..route("reports", "/reports") },
    Route { parameters: true, ..route("matrix", "/m") },
    Route { forward_authorization: false, ..route("private", "/private") },
    Route { env: RouteEnv::Fixed("qa"), ..route("qa-tools", "/qa-tools") },
    route("admin", "/admin"),
    route("api", "/api"),
];

pub fn env(name: &str) -> Option<&'static Env> {
    ENVS.iter().find(|e| e.name == name)
}

pub fn pool(name: &str) -> &'static Pool {
    POOLS.iter().find(|p| p.name == name).unwrap_or_else(|| panic!("the model names pool {name}"))
}

/// The TOML of the tables above. `@LISTEN@`, `@DEV@`, `@ADMIN@`, `@AUDIT@` and `@KEYS@`
/// are left for the caller (the socket harness fills them); `pool_addr` gives each
/// pool's server.
pub fn toml(partner_secret: &Path, pool_addr: &dyn Fn(&str) -> String) -> String {
    let pools: String = POOLS
        .iter()
        .map(|p| {
            let mut s = format!("[pools.{}]\nservers = [\"{}\"]\n", p.name, pool_addr(p.name));
            if let Some(t) = p.db_schema {
                s.push_str(&format!("db_schema = \"{t}\"\n"));
            }
            if let Some(t) = p.db_pool {
                s.push_str(&format!("db_pool = \"{t}\"\n"));
            }
            s
        })
        .collect();
    TOML.replace("@PREAMBLE@", crate::common::PREAMBLE)
        .replace("@PARTNER@", &partner_secret.display().to_string())
        .replace("@POOLS@", &pools)
}

const TOML: &str = r#"@PREAMBLE@
[[listeners]]
address = "@DEV@"
environment = "dev"

[token]
cache_entries = 100000

[forwarded]
trusted_proxies = ["10.0.0.0/8"]

[headers]
tenant = "X-Tenant-Id"
user = "x-user-id"
roles = "x-roles"
strip = ["x-forwarded-user", "X-Auth-Request-Email", "remote-user"]

[access]
admin_path_prefix = "/admin"
admin_roles = ["admin", "ops"]

[[issuers]]
name = "hmac"
issuer = "https://hmac.test"
audiences = ["isogate-tests"]
algorithms = ["HS256"]
secret_file = "@KEYS@/hmac.secret"

[[issuers]]
name = "partner"
issuer = "https://partner.test"
audiences = ["isogate-tests", "partner-api"]
algorithms = ["HS384"]
secret_file = "@PARTNER@"

[[issuers]]
name = "rsa"
issuer = "https://rsa.test"
audiences = ["isogate-tests"]
algorithms = ["RS256"]
public_key_file = "@KEYS@/rsa.pub.pem"

[[issuers]]
name = "ec"
issuer = "https://ec256.test"
audiences = ["isogate-tests"]
algorithms = ["ES256"]
public_key_file = "@KEYS@/ec256.pub.pem"

[environments.dev]
unmapped_tenants = "refuse"
issuers = ["hmac"]
tenants = { acme = "dev-acme", initech = "dev-initech" }
db_schema = "dev_{tenant}"

[environments.stage]
hosts = ["stage.test", "Stage-Alt.test"]
default_pool = "stage-shared"
tenant_claim = "optional"
issuers = ["hmac", "partner", "ec"]
tenants = { globex = "stage-globex" }

[environments.prod]
hosts = ["prod.test", "api.prod.test"]
default_pool = "prod-shared"
allowed_roles = ["user", "admin", "support", "analyst"]
tenants = { globex = "prod-globex", umbrella = "prod-umbrella", "42" = "prod-umbrella" }
db_schema = "company_{tenant}"
db_pool = "prod-{env}-main"

[environments.qa]
hosts = ["qa.test"]
default_pool = "qa-shared"
issuers = ["rsa", "ec", "partner"]
tenants = { globex = "qa-globex", acme = "qa-globex" }
db_schema = "qa_{sub}"

@POOLS@
[[routes]]
name = "by-token"
hosts = ["any.test"]
environment = "from_token"

[[routes]]
name = "matrix-host"
hosts = ["matrix.test"]
environment = "prod"
path_parameters = "allow"

[[routes]]
name = "files"
path_prefix = "/files"
rewrite_prefix = "/t/{tenant}"

[[routes]]
name = "store"
path_prefix = "/store"
rewrite_host = "{tenant}.store.internal"

[[routes]]
name = "reports"
path_prefix = "/reports"
roles_any = ["analyst", "admin"]

[[routes]]
name = "matrix"
path_prefix = "/m"
path_parameters = "allow"

[[routes]]
name = "private"
path_prefix = "/private"
forward_authorization = false

[[routes]]
name = "qa-tools"
path_prefix = "/qa-tools"
environment = "qa"

[[routes]]
name = "admin"
path_prefix = "/admin"

[[routes]]
name = "api"
path_prefix = "/api"
"#;
