//! The on-disk schema: serde structs that mirror `isogate.toml` one to one.
//!
//! Every struct denies unknown keys, so a typo is an error that points at its line.
//! Defaults come from the named functions below; their values are repeated in the
//! comments of `config/isogate.example.toml`. Nothing on the request path reads these
//! types: `snapshot::compile` turns them into the immutable `Snapshot`.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct File {
    /// Process-wide settings (threads, shutdown).
    #[serde(default)]
    pub server: Server,
    /// The admin listener: `/metrics`, `/healthz`, `/readyz`.
    #[serde(default)]
    pub admin: Admin,
    /// Optional metrics: the bounded tenant label.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Where audit lines go and what happens when they cannot be written.
    #[serde(default)]
    pub audit: Audit,
    /// Token extraction and validation limits shared by every issuer.
    #[serde(default)]
    pub token: Token,
    /// Names of the claims that carry identity in the token payload.
    #[serde(default)]
    pub claims: Claims,
    /// Trusted header names injected upstream, and what else to strip.
    #[serde(default)]
    pub headers: Headers,
    /// Access rules shared by every environment: reasons, admin routes, test accounts.
    #[serde(default)]
    pub access: Access,
    /// Size limits and client timeouts for requests.
    #[serde(default)]
    pub limits: Limits,
    /// `X-Forwarded-*`, `X-Real-IP` and `Forwarded`: set from the connection, trusted
    /// from listed proxies only.
    #[serde(default)]
    pub forwarded: Forwarded,
    /// W3C trace context: continue the caller's trace or start one.
    #[serde(default)]
    pub tracing: Tracing,
    /// Where rate-limit and quota state lives, and what happens when it is unreachable.
    #[serde(default)]
    pub rate_limit: RateLimit,
    /// Plans by name: rate, burst and quotas.
    #[serde(default)]
    pub plans: BTreeMap<Spanned<String>, Plan>,
    /// Listeners (plain HTTP or TLS); each may bind its requests to one environment.
    #[serde(default)]
    pub listeners: Vec<Listener>,
    /// Certificates for TLS listeners.
    #[serde(default)]
    pub certificates: Vec<Certificate>,
    /// Token issuers and their key material.
    #[serde(default)]
    pub issuers: Vec<Issuer>,
    /// Environments by name (`dev`, `stage`, `prod`, ...).
    #[serde(default)]
    pub environments: BTreeMap<Spanned<String>, Environment>,
    /// Upstream pools by name.
    #[serde(default)]
    pub pools: BTreeMap<Spanned<String>, Pool>,
    /// Routes, matched in file order; the first match wins.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Listeners speaking the PostgreSQL wire protocol, each bound to one environment.
    #[serde(default)]
    pub database_listeners: Vec<DatabaseListener>,
    /// PostgreSQL targets by name, chosen by the rendered `db_pool` of a session.
    #[serde(default)]
    pub databases: BTreeMap<Spanned<String>, Database>,
    /// Cancel requests across several gateway processes behind one address.
    pub database_cancel: Option<DatabaseCancel>,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Server {
    /// Worker threads for the proxy; 0 means one per CPU core.
    #[serde(default)]
    pub threads: usize,
    /// Whether idle workers take tasks queued on busy ones. Off: each worker keeps the
    /// connections it accepted, which costs less per request.
    #[serde(default)]
    pub work_stealing: bool,
    /// Seconds to keep serving in-flight requests after SIGTERM.
    #[serde(default = "default_grace_period_seconds")]
    pub grace_period_seconds: u64,
    /// Seconds to wait for runtimes to stop once the grace period is over.
    #[serde(default = "default_shutdown_timeout_seconds")]
    pub shutdown_timeout_seconds: u64,
    /// Unix socket the running process hands its listeners over on a binary upgrade
    /// (`isogate run --upgrade`, then SIGQUIT to the old process); absolute path.
    #[serde(default = "default_upgrade_socket")]
    pub upgrade_socket: String,
    /// Client connections open at once on the proxy listeners (1 to 1,000,000); past it
    /// a connection gets 503 `too_many_connections` and is closed.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds an idle keep-alive client connection is kept open (1 to 3600).
    #[serde(default = "default_keepalive_timeout_seconds")]
    pub keepalive_timeout_seconds: u64,
}

fn default_upgrade_socket() -> String {
    "/tmp/isogate-upgrade.sock".to_owned()
}

impl Default for Server {
    fn default() -> Self {
        Self {
            threads: 0,
            work_stealing: false,
            grace_period_seconds: default_grace_period_seconds(),
            shutdown_timeout_seconds: default_shutdown_timeout_seconds(),
            upgrade_socket: default_upgrade_socket(),
            max_connections: default_max_connections(),
            keepalive_timeout_seconds: default_keepalive_timeout_seconds(),
        }
    }
}

fn default_grace_period_seconds() -> u64 {
    5
}
fn default_shutdown_timeout_seconds() -> u64 {
    5
}
fn default_max_connections() -> usize {
    10_000
}
fn default_keepalive_timeout_seconds() -> u64 {
    60
}

/// `[admin]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Admin {
    /// Address of the admin listener.
    #[serde(default = "default_admin_address")]
    pub address: Spanned<String>,
}

impl Default for Admin {
    fn default() -> Self {
        Self { address: default_admin_address() }
    }
}

fn default_admin_address() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:9901".to_owned())
}

/// `[metrics]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct MetricsConfig {
    /// Tenants (busiest first) that get their own `tenant` label; the rest are `other`.
    /// 0 turns the per-tenant metric off.
    #[serde(default)]
    pub tenant_label_top: usize,
}

/// `[audit]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Audit {
    /// A file path, or `"stdout"`.
    #[serde(default = "default_audit_output")]
    pub output: Spanned<String>,
    /// Lines that may wait for the writer before the queue counts as full.
    #[serde(default = "default_audit_queue_capacity")]
    pub queue_capacity: Spanned<usize>,
    /// What to do with a request when its audit line cannot be queued.
    #[serde(default)]
    pub on_queue_full: OnQueueFull,
    /// Also write a second line when a response ends (bytes, duration): the first line
    /// is written when the response head is sent.
    #[serde(default)]
    pub stream_end: bool,
}

impl Default for Audit {
    fn default() -> Self {
        Self {
            output: default_audit_output(),
            queue_capacity: default_audit_queue_capacity(),
            on_queue_full: OnQueueFull::default(),
            stream_end: false,
        }
    }
}

fn default_audit_output() -> Spanned<String> {
    Spanned::new(0..0, "stdout".to_owned())
}
fn default_audit_queue_capacity() -> Spanned<usize> {
    Spanned::new(0..0, 65_536)
}

/// `audit.on_queue_full`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnQueueFull {
    /// Serve the request; the lost line is counted in `isogate_audit_lines_lost_total`.
    #[default]
    Serve,
    /// Refuse the request with 503 `audit_unavailable` (fail closed).
    Refuse,
}

/// `[token]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Token {
    /// Largest accepted token, in bytes.
    #[serde(default = "default_token_max_bytes")]
    pub max_bytes: Spanned<usize>,
    /// Default clock leeway for `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway_seconds")]
    pub leeway_seconds: u64,
    /// Verified tokens remembered to skip signature and claim work; 0 turns it off.
    #[serde(default = "default_token_cache_entries")]
    pub cache_entries: usize,
}

fn default_token_cache_entries() -> usize {
    10_000
}

impl Default for Token {
    fn default() -> Self {
        Self {
            max_bytes: default_token_max_bytes(),
            leeway_seconds: default_leeway_seconds(),
            cache_entries: default_token_cache_entries(),
        }
    }
}

fn default_token_max_bytes() -> Spanned<usize> {
    Spanned::new(0..0, 8192)
}
fn default_leeway_seconds() -> u64 {
    30
}

/// `[claims]`: the payload keys that carry each part of the identity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Claims {
    /// Environment claim.
    #[serde(default = "default_claim_environment")]
    pub environment: String,
    /// Tenant claim (a string or an integer).
    #[serde(default = "default_claim_tenant")]
    pub tenant: String,
    /// User claim.
    #[serde(default = "default_claim_user")]
    pub user: String,
    /// Roles claim (an array of strings, or one space-separated string).
    #[serde(default = "default_claim_roles")]
    pub roles: String,
    /// Test-account flag claim (a boolean).
    #[serde(default = "default_claim_test_account")]
    pub test_account: String,
}

impl Default for Claims {
    fn default() -> Self {
        Self {
            environment: default_claim_environment(),
            tenant: default_claim_tenant(),
            user: default_claim_user(),
            roles: default_claim_roles(),
            test_account: default_claim_test_account(),
        }
    }
}

fn default_claim_environment() -> String {
    "env".to_owned()
}
fn default_claim_tenant() -> String {
    "tenant".to_owned()
}
fn default_claim_user() -> String {
    "sub".to_owned()
}
fn default_claim_roles() -> String {
    "roles".to_owned()
}
fn default_claim_test_account() -> String {
    "is_test_account".to_owned()
}

/// `[headers]`: trusted header names. Each is stripped from every client request and
/// set again only from verified claims.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Headers {
    /// Every client header starting with this prefix is stripped.
    #[serde(default = "default_reserved_prefix")]
    pub reserved_prefix: Spanned<String>,
    /// Environment header.
    #[serde(default = "default_header_environment")]
    pub environment: Spanned<String>,
    /// Tenant header.
    #[serde(default = "default_header_tenant")]
    pub tenant: Spanned<String>,
    /// User header.
    #[serde(default = "default_header_user")]
    pub user: Spanned<String>,
    /// Roles header (comma-separated).
    #[serde(default = "default_header_roles")]
    pub roles: Spanned<String>,
    /// Test-account header (`true` when the token is a test account).
    #[serde(default = "default_header_test_account")]
    pub test_account: Spanned<String>,
    /// Pool header (the name of the pool chosen for the request).
    #[serde(default = "default_header_pool")]
    pub pool: Spanned<String>,
    /// Request id header: kept from the client when valid, generated otherwise.
    #[serde(default = "default_header_request_id")]
    pub request_id: Spanned<String>,
    /// System-mode header (`true` on admin routes for admins only).
    #[serde(default = "default_header_system_mode")]
    pub system_mode: Spanned<String>,
    /// Database schema hint header.
    #[serde(default = "default_header_db_schema")]
    pub db_schema: Spanned<String>,
    /// Database pool hint header.
    #[serde(default = "default_header_db_pool")]
    pub db_pool: Spanned<String>,
    /// More client headers to strip (identity headers of older app-side designs).
    #[serde(default)]
    pub strip: Vec<Spanned<String>>,
}

impl Default for Headers {
    fn default() -> Self {
        Self {
            reserved_prefix: default_reserved_prefix(),
            environment: default_header_environment(),
            tenant: default_header_tenant(),
            user: default_header_user(),
            roles: default_header_roles(),
            test_account: default_header_test_account(),
            pool: default_header_pool(),
            request_id: default_header_request_id(),
            system_mode: default_header_system_mode(),
            db_schema: default_header_db_schema(),
            db_pool: default_header_db_pool(),
            strip: Vec::new(),
        }
    }
}

fn default_reserved_prefix() -> Spanned<String> {
    Spanned::new(0..0, "x-isogate-".to_owned())
}
fn default_header_environment() -> Spanned<String> {
    Spanned::new(0..0, "x-isogate-environment".to_owned())
}
fn default_header_tenant() -> Spanned<String> {
    Spanned::new(0..0, "x-isogate-tenant".to_owned())
}
fn default_header_user() -> Spanned<String> {
    Spanned::new(0..0, "x-isogate-user".to_owned())
}
fn default_header_roles() -> Spanned<String> {
    Spanned::new(0..0, "x-isogate-roles".to_owned())
}
fn default_header_test_account() -> Spanned<String> {
    Spanned::new(0..0, "x-isogate-test-account".to_owned())
}
fn default_header_pool() -> Spanned<String> {
    Spanned::new(0..0, "x-isogate-pool".to_owned())
}
fn default_header_request_id() -> Spanned<String> {
    Spanned::new(0..0, "x-request-id".to_owned())
}
fn default_header_system_mode() -> Spanned<String> {
    Spanned::new(0..0, "x-isogate-system-mode".to_owned())
}
fn default_header_db_schema() -> Spanned<String> {
    Spanned::new(0..0, "x-isogate-db-schema".to_owned())
}
fn default_header_db_pool() -> Spanned<String> {
    Spanned::new(0..0, "x-isogate-db-pool".to_owned())
}

/// `[access]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Access {
    /// Header carrying the access reason (e.g. `debugging issue #123`).
    #[serde(default = "default_reason_header")]
    pub reason_header: Spanned<String>,
    /// Longest reason kept, in characters; longer ones are cut.
    #[serde(default = "default_reason_max_chars")]
    pub reason_max_chars: usize,
    /// Paths under this prefix are admin (system-mode) routes.
    pub admin_path_prefix: Option<Spanned<String>>,
    /// Roles allowed on admin routes.
    #[serde(default = "default_admin_roles")]
    pub admin_roles: Vec<String>,
    /// Subject patterns (`*` wildcard) that mark a token as a test account.
    #[serde(default)]
    pub test_account_subjects: Vec<Spanned<String>>,
    /// Longest token lifetime accepted from a test account, in seconds.
    pub test_account_max_lifetime_seconds: Option<u64>,
}

impl Default for Access {
    fn default() -> Self {
        Self {
            reason_header: default_reason_header(),
            reason_max_chars: default_reason_max_chars(),
            admin_path_prefix: None,
            admin_roles: default_admin_roles(),
            test_account_subjects: Vec::new(),
            test_account_max_lifetime_seconds: None,
        }
    }
}

fn default_reason_header() -> Spanned<String> {
    Spanned::new(0..0, "x-access-reason".to_owned())
}
fn default_reason_max_chars() -> usize {
    200
}
fn default_admin_roles() -> Vec<String> {
    vec!["admin".to_owned()]
}

/// `[limits]`: what a request may weigh and how long a client may take to send it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Limits {
    /// Longest request target (path and query), in bytes; longer gets 414.
    #[serde(default = "default_max_uri_bytes")]
    pub max_uri_bytes: usize,
    /// Largest single header (name and value), in bytes; larger gets 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Largest request head (every header's name and value), in bytes; larger gets 431.
    #[serde(default = "default_max_request_header_bytes")]
    pub max_request_header_bytes: usize,
    /// Most headers in one request; more gets 431.
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
    /// Largest request body, in bytes, unless the route sets its own; larger gets 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// Longest wait for the next piece of a request body, in seconds; then 408.
    #[serde(default = "default_body_read_timeout_seconds")]
    pub body_read_timeout_seconds: u64,
    /// Longest time from the first byte of a request head to its end, in seconds; then 408.
    #[serde(default = "default_header_read_timeout_seconds")]
    pub header_read_timeout_seconds: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_uri_bytes: default_max_uri_bytes(),
            max_header_bytes: default_max_header_bytes(),
            max_request_header_bytes: default_max_request_header_bytes(),
            max_headers: default_max_headers(),
            max_body_bytes: default_max_body_bytes(),
            body_read_timeout_seconds: default_body_read_timeout_seconds(),
            header_read_timeout_seconds: default_header_read_timeout_seconds(),
        }
    }
}

fn default_max_uri_bytes() -> usize {
    8_192
}
fn default_max_header_bytes() -> usize {
    16_384
}
fn default_max_request_header_bytes() -> usize {
    32_768
}
fn default_max_headers() -> usize {
    100
}
fn default_max_body_bytes() -> u64 {
    8 * 1024 * 1024
}
fn default_body_read_timeout_seconds() -> u64 {
    30
}
fn default_header_read_timeout_seconds() -> u64 {
    10
}

/// `[forwarded]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Forwarded {
    /// Proxies (CIDRs such as `10.0.0.0/8`, or single addresses) whose forwarded headers
    /// are kept and extended; from anyone else they are replaced.
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
    /// Which forwarded headers the upstream gets (the client's copies are removed either
    /// way): some of `x-forwarded-for`, `x-forwarded-proto`, `x-forwarded-host`,
    /// `x-real-ip`, `forwarded`.
    #[serde(default = "default_forwarded_set")]
    pub set: Vec<Spanned<String>>,
}

impl Default for Forwarded {
    fn default() -> Self {
        Self { trusted_proxies: Vec::new(), set: default_forwarded_set() }
    }
}

/// `[tracing]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Tracing {
    /// Set `traceparent` upstream: the caller's trace continued under the gateway's
    /// span, or a new trace; a malformed one is replaced. Off: the headers pass as sent.
    #[serde(default = "default_trace_context")]
    pub trace_context: bool,
}

impl Default for Tracing {
    fn default() -> Self {
        Self { trace_context: default_trace_context() }
    }
}

fn default_trace_context() -> bool {
    true
}

fn default_forwarded_set() -> Vec<Spanned<String>> {
    ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-real-ip", "forwarded"]
        .into_iter()
        .map(|h| Spanned::new(0..0, h.to_owned()))
        .collect()
}

/// `[[listeners]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Listener {
    /// `ip:port` to accept plain HTTP on.
    pub address: Spanned<String>,
    /// Environment every request on this listener belongs to (optional).
    pub environment: Option<Spanned<String>>,
    /// Terminate TLS here, with the certificate chosen by SNI from `[[certificates]]`.
    #[serde(default)]
    pub tls: bool,
    /// Offer HTTP/2 (via ALPN) on a TLS listener.
    #[serde(default)]
    pub http2: bool,
    /// Accept HTTP/2 without TLS (h2c, prior knowledge) on a plain listener.
    #[serde(default)]
    pub h2c: bool,
}

/// `[[certificates]]`: served on TLS listeners, chosen by the client's SNI.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Certificate {
    /// PEM certificate chain (leaf first), relative to the config file.
    pub cert_file: Spanned<String>,
    /// PEM private key, relative to the config file.
    pub key_file: Spanned<String>,
    /// Names this certificate serves (`api.example.com`, `*.example.com`); the first
    /// certificate also answers clients that send no or an unknown name.
    pub server_names: Vec<String>,
}

/// `[[issuers]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Issuer {
    /// Short name used in logs and in `environments.*.issuers`.
    pub name: Spanned<String>,
    /// The exact `iss` claim value.
    pub issuer: Spanned<String>,
    /// Accepted `aud` values; when empty, tokens carrying `aud` are refused.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Allowed `alg` values, e.g. `["RS256"]`; HMAC never mixes with public-key ones.
    pub algorithms: Spanned<Vec<Spanned<String>>>,
    /// Accepted JWS `typ` header values (e.g. `["at+jwt"]`); unset accepts any, or none.
    pub token_types: Option<Spanned<Vec<String>>>,
    /// Leeway override for this issuer, in seconds.
    pub leeway_seconds: Option<u64>,
    /// PEM public key file (RSA, EC P-256/P-384 or Ed25519), relative to the config file.
    pub public_key_file: Option<Spanned<String>>,
    /// Environment variable holding the HMAC secret.
    pub secret_env: Option<Spanned<String>>,
    /// File holding the HMAC secret, relative to the config file.
    pub secret_file: Option<Spanned<String>>,
    /// URL of the issuer's JWKS (keys fetched and refreshed in the background).
    pub jwks_url: Option<Spanned<String>>,
    /// URL of the issuer's OpenID discovery document (`.../.well-known/openid-configuration`).
    pub discovery_url: Option<Spanned<String>>,
    /// Extra CA certificate (PEM) trusted for JWKS and discovery fetches.
    pub ca_file: Option<Spanned<String>>,
    /// Fetch timeout, in milliseconds.
    #[serde(default = "default_fetch_timeout_ms")]
    pub fetch_timeout_ms: u64,
    /// Shortest refresh interval, in seconds (lower bound for `Cache-Control: max-age`).
    #[serde(default = "default_refresh_min_seconds")]
    pub refresh_min_seconds: u64,
    /// Longest refresh interval, in seconds (upper bound, and the interval without max-age).
    #[serde(default = "default_refresh_max_seconds")]
    pub refresh_max_seconds: u64,
    /// How long the last good keys keep working while the IdP is down, in seconds.
    /// Must be above `refresh_min_seconds`.
    #[serde(default = "default_max_staleness_seconds")]
    pub max_staleness_seconds: Spanned<u64>,
    /// After an unknown-`kid` refetch, seconds before another one is allowed (0 to 60).
    #[serde(default = "default_unknown_kid_cooldown_seconds")]
    pub unknown_kid_cooldown_seconds: Spanned<u64>,
    /// Where this issuer's tokens may come from, in order (default: `["authorization"]`).
    pub token_sources: Option<Spanned<Vec<TokenSource>>>,
}

/// One place a token may come from (`token_sources` of issuers and routes).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenSource {
    /// `Authorization: Bearer <token>`.
    Authorization,
    /// The cookie of this name.
    Cookie(String),
    /// The query parameter of this name, on WebSocket upgrades only.
    Query(String),
    /// `Sec-WebSocket-Protocol: <marker>, <token>`, on WebSocket upgrades only.
    Subprotocol(String),
}

fn default_fetch_timeout_ms() -> u64 {
    2_000
}
fn default_refresh_min_seconds() -> u64 {
    60
}
fn default_refresh_max_seconds() -> u64 {
    3_600
}
fn default_max_staleness_seconds() -> Spanned<u64> {
    Spanned::new(0..0, 86_400)
}
fn default_unknown_kid_cooldown_seconds() -> Spanned<u64> {
    Spanned::new(0..0, 5)
}

/// `[environments.NAME]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Environment {
    /// Host names whose requests belong to this environment.
    #[serde(default)]
    pub hosts: Vec<Spanned<String>>,
    /// Pool for tenants without a pool of their own.
    pub default_pool: Option<Spanned<String>>,
    /// What to do with a tenant that has no pool of its own.
    #[serde(default)]
    pub unmapped_tenants: UnmappedTenants,
    /// Whether every token must carry the tenant claim here.
    #[serde(default)]
    pub tenant_claim: TenantClaim,
    /// Issuers whose tokens this environment accepts; empty means all.
    #[serde(default)]
    pub issuers: Vec<Spanned<String>>,
    /// Tenant → pool, inline.
    #[serde(default)]
    pub tenants: BTreeMap<String, Spanned<String>>,
    /// Tenant map file (`tenant,pool` per line), relative to the config file.
    pub tenant_map_file: Option<Spanned<String>>,
    /// Roles that may enter this environment at all; unset means any.
    pub allowed_roles: Option<Vec<String>>,
    /// Roles that must give an access reason here.
    #[serde(default)]
    pub reason_required_roles: Vec<String>,
    /// `enforce` access rules, or `report_only`: serve, but audit what would be refused.
    #[serde(default)]
    pub enforcement: Enforcement,
    /// Database schema hint template, e.g. `company_{tenant}`.
    pub db_schema: Option<Spanned<String>>,
    /// Database pool hint template, e.g. `prod-eu-1`.
    pub db_pool: Option<Spanned<String>>,
    /// Plan for tenants without one of their own (unset: no limit).
    pub default_plan: Option<Spanned<String>>,
    /// Plan for developer test accounts.
    pub test_account_plan: Option<Spanned<String>>,
    /// Tenant → plan, inline (the tenant map file's third column also sets plans).
    #[serde(default)]
    pub tenant_plans: BTreeMap<String, Spanned<String>>,
}

/// `[rate_limit]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct RateLimit {
    /// `local` (each gateway alone) or `redis` (shared by every gateway).
    #[serde(default)]
    pub backend: LimitBackend,
    /// What a limit counts: per `tenant`, or per `tenant_user`.
    #[serde(default)]
    pub key: LimitKey,
    /// Redis URL for the `redis` backend.
    pub redis_url: Option<Spanned<String>>,
    /// Longest wait for Redis, in milliseconds.
    #[serde(default = "default_redis_timeout_ms")]
    pub redis_timeout_ms: u64,
    /// What to do while Redis is slow or down.
    #[serde(default)]
    pub on_redis_error: OnRedisError,
    /// Gateways sharing the limits; with `local_fallback` each enforces `1/instances`.
    #[serde(default = "default_instances")]
    pub instances: u64,
    /// Slots of the local rate table (16 bytes each); also bounds local quota entries.
    #[serde(default = "default_local_capacity")]
    pub local_capacity: usize,
    /// A token claim that may name the plan (unset: tokens cannot choose a plan).
    pub plan_claim: Option<String>,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            backend: LimitBackend::default(),
            key: LimitKey::default(),
            redis_url: None,
            redis_timeout_ms: default_redis_timeout_ms(),
            on_redis_error: OnRedisError::default(),
            instances: default_instances(),
            local_capacity: default_local_capacity(),
            plan_claim: None,
        }
    }
}

fn default_redis_timeout_ms() -> u64 {
    50
}
fn default_instances() -> u64 {
    1
}
fn default_local_capacity() -> usize {
    1 << 20
}

/// `rate_limit.backend`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitBackend {
    /// In this process only.
    #[default]
    Local,
    /// Shared through Redis.
    Redis,
}

/// `rate_limit.key`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKey {
    /// One budget per tenant.
    #[default]
    Tenant,
    /// One budget per tenant and user.
    TenantUser,
}

/// `rate_limit.on_redis_error`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnRedisError {
    /// Admit requests (counted and audited).
    FailOpen,
    /// Refuse requests with 503 `limiter_unavailable`.
    FailClosed,
    /// Each gateway enforces its share of the limits locally.
    #[default]
    LocalFallback,
}

/// `[plans.NAME]`; a plan with no rate and no quota is unlimited.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Plan {
    /// Sustained requests per second (1 to 1000000).
    pub rate_per_second: Option<u32>,
    /// Requests allowed at once (default: the rate).
    pub burst: Option<u32>,
    /// Requests per clock minute.
    pub quota_minute: Option<u64>,
    /// Requests per clock hour.
    pub quota_hour: Option<u64>,
    /// Requests per calendar day.
    pub quota_day: Option<u64>,
    /// Requests per calendar month.
    pub quota_month: Option<u64>,
    /// IANA timezone the quota windows follow (default UTC).
    pub timezone: Option<Spanned<String>>,
}

/// `environments.NAME.enforcement`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Enforcement {
    /// Refuse what the access rules refuse.
    #[default]
    Enforce,
    /// Serve, and write the would-be refusal to the audit line and a metric.
    ReportOnly,
}

/// `environments.NAME.tenant_claim`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantClaim {
    /// A token without the tenant claim is refused with 401 `tenant_missing`.
    #[default]
    Required,
    /// Tokens without it are served, unlimited by any tenant's budget, in the default pool.
    Optional,
}

/// `routes[].path_parameters`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathParameters {
    /// A path with a segment parameter (`;` or `%3B`) is refused as `ambiguous_path`.
    #[default]
    Refuse,
    /// Segment parameters pass upstream; routes and access rules match without them.
    Allow,
}

/// `environments.NAME.unmapped_tenants`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnmappedTenants {
    /// Send them to the environment's `default_pool`.
    #[default]
    DefaultPool,
    /// Refuse them with 403 `tenant_not_mapped`.
    Refuse,
}

/// `[pools.NAME]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Pool {
    /// `host:port` of each server.
    pub servers: Spanned<Vec<Spanned<String>>>,
    /// TCP connect timeout, in milliseconds.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Timeout for each read from the upstream, in milliseconds.
    #[serde(default = "default_read_timeout_ms")]
    pub read_timeout_ms: u64,
    /// Connect to the servers over TLS.
    #[serde(default)]
    pub tls: bool,
    /// The HTTP version spoken to the servers: `http1` (unset), `h2` (over TLS) or `h2c`.
    pub protocol: Option<Spanned<UpstreamProtocol>>,
    /// Server name sent (SNI) and verified in the servers' certificates; required with TLS.
    pub sni: Option<Spanned<String>>,
    /// CA certificate(s) (PEM) trusted for the servers instead of the system roots.
    pub ca_file: Option<Spanned<String>>,
    /// Client certificate (PEM chain) for mutual TLS.
    pub client_cert_file: Option<Spanned<String>>,
    /// Private key (PEM) of the client certificate.
    pub client_key_file: Option<Spanned<String>>,
    /// `round_robin`, or `tenant_hash` (consistent hashing: a tenant sticks to a server).
    #[serde(default)]
    pub balance: Balance,
    /// Path of an active HTTP health check (a 200 is healthy); unset: no active check.
    pub health_check_path: Option<Spanned<String>>,
    /// Milliseconds between health checks.
    #[serde(default = "default_health_check_interval_ms")]
    pub health_check_interval_ms: u64,
    /// Timeout of one health check, in milliseconds.
    #[serde(default = "default_health_check_timeout_ms")]
    pub health_check_timeout_ms: u64,
    /// Successful checks in a row before a server is healthy again.
    #[serde(default = "default_healthy_after")]
    pub healthy_after: usize,
    /// Failed checks in a row before a server is unhealthy.
    #[serde(default = "default_unhealthy_after")]
    pub unhealthy_after: usize,
    /// Connection failures in a row that eject a server (0: never eject).
    #[serde(default = "default_eject_after_failures")]
    pub eject_after_failures: u32,
    /// Seconds an ejected server is skipped.
    #[serde(default = "default_eject_seconds")]
    pub eject_seconds: u64,
    /// Database schema hint template for this pool (overrides the environment's).
    pub db_schema: Option<Spanned<String>>,
    /// Database pool hint template for this pool (overrides the environment's).
    pub db_pool: Option<Spanned<String>>,
}

/// `pools.NAME.protocol`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1.
    #[default]
    Http1,
    /// HTTP/2 over TLS (ALPN `h2`).
    H2,
    /// HTTP/2 without TLS, with prior knowledge.
    H2c,
}

/// `pools.NAME.balance`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Each server in turn.
    #[default]
    RoundRobin,
    /// Consistent hashing of the tenant.
    TenantHash,
}

fn default_health_check_interval_ms() -> u64 {
    2_000
}
fn default_health_check_timeout_ms() -> u64 {
    1_000
}
fn default_healthy_after() -> usize {
    2
}
fn default_unhealthy_after() -> usize {
    2
}
fn default_eject_after_failures() -> u32 {
    3
}
fn default_eject_seconds() -> u64 {
    10
}
fn default_connect_timeout_ms() -> u64 {
    1_000
}
fn default_read_timeout_ms() -> u64 {
    30_000
}

/// `[[routes]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Route {
    /// Name used in metrics and audit lines.
    pub name: Spanned<String>,
    /// Host names this route matches; empty matches any host.
    #[serde(default)]
    pub hosts: Vec<Spanned<String>>,
    /// Path prefix, matched on whole segments.
    #[serde(default = "default_path_prefix")]
    pub path_prefix: Spanned<String>,
    /// An environment name, or `"from_token"`; unset means the host's or the listener's.
    pub environment: Option<Spanned<String>>,
    /// Whether the client's `Authorization` header is passed to the upstream.
    #[serde(default = "default_forward_authorization")]
    pub forward_authorization: bool,
    /// The caller needs at least one of these roles.
    #[serde(default)]
    pub roles_any: Vec<String>,
    /// The caller needs all of these roles.
    #[serde(default)]
    pub roles_all: Vec<String>,
    /// Per environment, the caller needs one of these roles (replaces `roles_any` there).
    #[serde(default)]
    pub roles_by_environment: BTreeMap<Spanned<String>, Vec<String>>,
    /// Critical routes (payments, billing, exports) refuse test accounts.
    #[serde(default)]
    pub critical: bool,
    /// Replaces the matched `path_prefix` upstream, e.g. `/buckets/{tenant}`.
    pub rewrite_prefix: Option<Spanned<String>>,
    /// Sets the upstream `Host`, e.g. `{tenant}.store.internal`.
    pub rewrite_host: Option<Spanned<String>>,
    /// Units a request on this route charges against rates and quotas.
    #[serde(default = "default_cost")]
    pub cost: u32,
    /// Whether paths may carry segment parameters (`/a;v=1/b`, matrix parameters).
    #[serde(default)]
    pub path_parameters: PathParameters,
    /// Largest request body on this route, in bytes (default: `limits.max_body_bytes`).
    pub max_body_bytes: Option<Spanned<u64>>,
    /// Where the token may come from on this route, in order (default: the issuers').
    pub token_sources: Option<Spanned<Vec<TokenSource>>>,
    /// Whether a cookie that is a token source is passed on to the upstream.
    #[serde(default)]
    pub forward_token_cookie: bool,
    /// Seconds a WebSocket may pass no message either way before it is closed.
    #[serde(default = "default_websocket_idle_timeout_seconds")]
    pub websocket_idle_timeout_seconds: Spanned<u64>,
    /// Seconds a WebSocket may stay open at all.
    #[serde(default = "default_websocket_max_lifetime_seconds")]
    pub websocket_max_lifetime_seconds: Spanned<u64>,
    /// Cross-origin requests from browsers; unset: no CORS answers or headers.
    pub cors: Option<Cors>,
}

fn default_websocket_idle_timeout_seconds() -> Spanned<u64> {
    Spanned::new(0..0, 300)
}
fn default_websocket_max_lifetime_seconds() -> Spanned<u64> {
    Spanned::new(0..0, 86_400)
}

/// `[routes.cors]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Cors {
    /// Origins (`https://app.example.com`) allowed; `"*"` alone allows any, without credentials.
    pub allowed_origins: Spanned<Vec<Spanned<String>>>,
    /// Methods a cross-origin request may use.
    #[serde(default = "default_cors_methods")]
    pub allowed_methods: Vec<Spanned<String>>,
    /// Request headers a cross-origin request may send.
    #[serde(default)]
    pub allowed_headers: Vec<Spanned<String>>,
    /// Response headers the browser lets the page read.
    #[serde(default)]
    pub expose_headers: Vec<Spanned<String>>,
    /// Whether the browser may send cookies and read the answer.
    #[serde(default = "default_cors_allow_credentials")]
    pub allow_credentials: Spanned<bool>,
    /// Seconds a browser may cache a preflight answer.
    #[serde(default = "default_cors_max_age_seconds")]
    pub max_age_seconds: u64,
}

fn default_cors_methods() -> Vec<Spanned<String>> {
    ["GET", "HEAD", "POST"].into_iter().map(|m| Spanned::new(0..0, m.to_owned())).collect()
}
fn default_cors_allow_credentials() -> Spanned<bool> {
    Spanned::new(0..0, false)
}
fn default_cors_max_age_seconds() -> u64 {
    600
}

fn default_cost() -> u32 {
    1
}

fn default_path_prefix() -> Spanned<String> {
    Spanned::new(0..0, "/".to_owned())
}
fn default_forward_authorization() -> bool {
    true
}

/// `[[database_listeners]]`: a PostgreSQL front.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct DatabaseListener {
    /// `ip:port` to accept PostgreSQL clients on.
    pub address: Spanned<String>,
    /// The environment every session on this listener belongs to (or `server_names`).
    pub environment: Option<Spanned<String>>,
    /// The environment of each session chosen by the TLS server name (SNI) the client
    /// sent, instead of one `environment`: lowercase name to environment.
    pub server_names: Option<BTreeMap<Spanned<String>, Spanned<String>>>,
    /// PEM certificate chain this listener serves, instead of `[[certificates]]` by SNI.
    pub cert_file: Option<Spanned<String>>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<Spanned<String>>,
    /// Serve clients that do not ask for TLS (only on a loopback address).
    #[serde(default)]
    pub allow_plaintext: bool,
    /// Client sessions open at once on this listener, from 1 to 100000; past it a
    /// client is refused with SQLSTATE 53300 once its startup packet is read.
    #[serde(default = "default_database_max_sessions")]
    pub max_sessions: usize,
    /// How clients hand their token over: as the password, or by SASL OAUTHBEARER.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// The scope named in the OAUTHBEARER error response (`client_auth = "oauthbearer"`
    /// only), e.g. `"openid"`.
    #[serde(default)]
    pub oauth_scope: Option<Spanned<String>>,
}

/// How a database client hands its token to a listener. The server names one method
/// up front, so this is a listener setting; either way the token is the same JWT.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// `AuthenticationCleartextPassword`: the token is the password (any libpq client).
    #[default]
    Password,
    /// SASL `OAUTHBEARER` (RFC 7628), as PostgreSQL 18 clients speak it (the value is
    /// the mechanism's name, `oauthbearer`).
    Oauthbearer,
}

fn default_database_max_sessions() -> usize {
    1000
}

/// `[database_cancel]`: several gateway processes behind one address, each handing out
/// cancel keys that carry its peer id and forwarding the others' cancel requests.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct DatabaseCancel {
    /// This process's peer id, from 1 to 255, unique among the peers.
    pub peer_id: Spanned<u64>,
    /// The other peers' database listener addresses (`ip:port`), keyed by peer id.
    #[serde(default)]
    pub peers: BTreeMap<Spanned<String>, Spanned<String>>,
}

/// How a database target's secret becomes the password isogate signs in with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PasswordMode {
    /// The secret is a master secret; each login role's password is derived from it.
    #[default]
    Derived,
    /// The secret is the password itself.
    Literal,
}

/// `[databases.NAME]`: a PostgreSQL server and database isogate signs in to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Database {
    /// Host name or address of the server.
    pub host: Spanned<String>,
    /// TCP port of the server.
    #[serde(default = "default_database_port")]
    pub port: u16,
    /// The database to open.
    pub database: Spanned<String>,
    /// Login role template (`{env}`, `{tenant}`, `{sub}`), e.g. `tenant_{tenant}`.
    pub user: Spanned<String>,
    /// Environment variable holding the secret.
    pub password_env: Option<Spanned<String>>,
    /// File holding the secret, relative to the config file.
    pub password_file: Option<Spanned<String>>,
    /// Whether the secret is a master secret (`derived`) or the password (`literal`).
    #[serde(default)]
    pub password: PasswordMode,
    /// Server connections open at once to this target, over every login role.
    #[serde(default = "default_database_max_server_connections")]
    pub max_server_connections: usize,
    /// Longest wait for a server connection before the session is refused, in ms.
    #[serde(default = "default_database_queue_timeout_ms")]
    pub queue_timeout_ms: u64,
    /// TCP connect and sign-in timeout, in ms.
    #[serde(default = "default_database_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// An idle pooled server connection is closed after this many seconds unused.
    #[serde(default = "default_database_server_idle_timeout_seconds")]
    pub server_idle_timeout_seconds: u64,
    /// A server connection older than this many seconds is closed when its session
    /// ends, instead of going back to the pool.
    #[serde(default = "default_database_server_lifetime_seconds")]
    pub server_lifetime_seconds: u64,
    /// One audit line per statement of the sessions that gave an access reason.
    #[serde(default)]
    pub audit_statements: bool,
    /// Connect to the server over TLS (after an `SSLRequest`), verified with `ca_file`.
    #[serde(default)]
    pub tls: bool,
    /// PEM CA certificate(s) the server's certificate must chain to.
    pub ca_file: Option<Spanned<String>>,
    /// The name the server's certificate must carry (default: `host`).
    pub server_name: Option<Spanned<String>>,
    /// PEM certificate chain isogate presents to the server (`clientcert=` in pg_hba.conf).
    pub client_cert_file: Option<Spanned<String>>,
    /// PEM private key of `client_cert_file`.
    pub client_key_file: Option<Spanned<String>>,
}

fn default_database_port() -> u16 {
    5432
}
fn default_database_max_server_connections() -> usize {
    20
}
fn default_database_queue_timeout_ms() -> u64 {
    5000
}
fn default_database_connect_timeout_ms() -> u64 {
    5000
}
fn default_database_server_idle_timeout_seconds() -> u64 {
    600
}
fn default_database_server_lifetime_seconds() -> u64 {
    3600
}
