//! Every way a request is refused, in one table: status, stable reason and extra headers.
//!
//! The reason strings are a stable interface: they appear in the response body, the
//! audit line and the `reason` metric label. `proxy` is the only caller that writes
//! the response, through `Reject::body`.

use std::time::Duration;

use crate::auth::AuthError;
use crate::database::codec::oauthbearer::SaslError;
use crate::ratelimit::quota::Window;

/// Why a request was not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// The request itself is malformed (e.g. several `Host` headers).
    BadRequest,
    /// The path cannot be normalised without guessing (encoded slash, `..` above root).
    AmbiguousPath,
    /// The request target is longer than `limits.max_uri_bytes`.
    UriTooLong,
    /// Too many headers, or a header or the whole head over its size limit.
    HeadersTooLarge,
    /// The body is larger than the route allows.
    BodyTooLarge,
    /// The client was too slow to send the request.
    RequestTimeout,
    /// The method cannot be proxied (`CONNECT`).
    MethodNotAllowed,
    /// No route matches the host and path.
    NoRoute,
    /// A CORS preflight asks for an origin, method or header the route does not allow.
    CorsNotAllowed,
    /// The token is missing or invalid.
    Unauthenticated(AuthError),
    /// The environment requires a tenant and the token names none.
    TenantMissing,
    /// The token's environment is not the environment of the listener, host or route.
    WrongEnvironment,
    /// The environment could not be determined, or names no configured environment.
    UnknownEnvironment,
    /// The token's issuer is not trusted by the request's environment.
    IssuerNotTrusted,
    /// The tenant has no pool and the environment refuses unmapped tenants.
    TenantNotMapped,
    /// None of the caller's roles may enter this environment.
    RoleNotAllowed,
    /// The route needs a role the caller does not hold.
    RoleRequired,
    /// Admin routes need an admin role.
    AdminRoleRequired,
    /// The caller's role must give an access reason in this environment.
    ReasonRequired,
    /// Test accounts may not use critical routes.
    TestAccountForbidden,
    /// The test account's token lives longer than allowed.
    TestAccountLifetime,
    /// A claim rendered into a schema, path or host is not made of safe characters.
    UnsafeTenantValue,
    /// Over the plan's rate.
    RateLimited {
        /// Milliseconds until a request would be admitted.
        retry_after_ms: u64,
    },
    /// A quota window of the plan is used up.
    QuotaExhausted {
        /// The window.
        window: Window,
        /// Seconds until it ends.
        retry_after_s: u64,
    },
    /// The shared limiter is unreachable and the policy is fail-closed.
    LimiterUnavailable,
    /// The audit line could not be queued and the policy is fail-closed.
    AuditUnavailable,
    /// The upstream could not be reached or failed mid-request.
    UpstreamUnreachable,
    /// The pool has no server to send to.
    UpstreamUnavailable,
    /// The upstream did not answer in time.
    UpstreamTimeout,
    /// A database client broke the wire protocol (bad startup packet, unexpected message).
    ProtocolViolation,
    /// A database client did not ask for TLS on a listener that requires it.
    TlsRequired,
    /// A database client's TLS handshake named no server name, or one its listener does
    /// not map to an environment.
    UnknownServerName,
    /// The session's rendered `db_pool` names no `[databases.NAME]`.
    NoDatabase,
    /// No server connection to the database target became free in time.
    DatabaseBusy,
    /// A database listener already holds `max_sessions` client sessions.
    TooManySessions,
    /// A database client on an OAUTHBEARER listener chose another SASL mechanism, or
    /// left when asked for OAUTHBEARER (a client that only knows passwords).
    SaslMechanism,
    /// A database client's OAUTHBEARER message is malformed.
    SaslMalformed(SaslError),
    /// A database client asked for the OAUTHBEARER discovery parameters; it connects
    /// again with a token.
    OauthDiscovery,
}

impl Reject {
    /// HTTP status of the response.
    pub fn status(self) -> u16 {
        match self {
            Reject::BadRequest | Reject::AmbiguousPath => 400,
            Reject::Unauthenticated(_) | Reject::TenantMissing => 401,
            Reject::SaslMechanism | Reject::OauthDiscovery => 401,
            Reject::SaslMalformed(_) => 400,
            Reject::WrongEnvironment
            | Reject::UnknownEnvironment
            | Reject::IssuerNotTrusted
            | Reject::TenantNotMapped
            | Reject::RoleNotAllowed
            | Reject::RoleRequired
            | Reject::AdminRoleRequired
            | Reject::ReasonRequired
            | Reject::TestAccountForbidden
            | Reject::TestAccountLifetime
            | Reject::UnsafeTenantValue
            | Reject::CorsNotAllowed => 403,
            Reject::NoRoute | Reject::NoDatabase => 404,
            Reject::ProtocolViolation => 400,
            Reject::TlsRequired | Reject::UnknownServerName => 403,
            Reject::DatabaseBusy | Reject::TooManySessions => 503,
            Reject::MethodNotAllowed => 405,
            Reject::RequestTimeout => 408,
            Reject::BodyTooLarge => 413,
            Reject::UriTooLong => 414,
            Reject::HeadersTooLarge => 431,
            Reject::RateLimited { .. } | Reject::QuotaExhausted { .. } => 429,
            Reject::LimiterUnavailable => 503,
            Reject::UpstreamUnreachable => 502,
            Reject::AuditUnavailable | Reject::UpstreamUnavailable => 503,
            Reject::UpstreamTimeout => 504,
        }
    }

    /// Stable snake_case reason for the body, the audit line and metrics.
    pub fn reason(self) -> &'static str {
        match self {
            Reject::BadRequest => "malformed_request",
            Reject::AmbiguousPath => "ambiguous_path",
            Reject::RoleNotAllowed => "role_not_allowed",
            Reject::RoleRequired => "role_required",
            Reject::AdminRoleRequired => "admin_role_required",
            Reject::ReasonRequired => "reason_required",
            Reject::TestAccountForbidden => "test_account_forbidden",
            Reject::TestAccountLifetime => "test_account_lifetime",
            Reject::UnsafeTenantValue => "tenant_value_unsafe",
            Reject::NoRoute => "no_route",
            Reject::CorsNotAllowed => "cors_not_allowed",
            Reject::UriTooLong => "uri_too_long",
            Reject::HeadersTooLarge => "headers_too_large",
            Reject::BodyTooLarge => "body_too_large",
            Reject::RequestTimeout => "request_timeout",
            Reject::MethodNotAllowed => "method_not_allowed",
            Reject::TenantMissing => "tenant_missing",
            Reject::RateLimited { .. } => "rate_limited",
            Reject::QuotaExhausted { .. } => "quota_exhausted",
            Reject::LimiterUnavailable => "limiter_unavailable",
            Reject::Unauthenticated(e) => e.reason(),
            Reject::WrongEnvironment => "wrong_environment",
            Reject::UnknownEnvironment => "unknown_environment",
            Reject::IssuerNotTrusted => "issuer_not_trusted",
            Reject::TenantNotMapped => "tenant_not_mapped",
            Reject::AuditUnavailable => "audit_unavailable",
            Reject::UpstreamUnreachable => "upstream_unreachable",
            Reject::UpstreamUnavailable => "upstream_unavailable",
            Reject::UpstreamTimeout => "upstream_timeout",
            Reject::ProtocolViolation => "protocol_violation",
            Reject::TlsRequired => "tls_required",
            Reject::UnknownServerName => "unknown_server_name",
            Reject::NoDatabase => "no_database",
            Reject::DatabaseBusy => "database_busy",
            Reject::TooManySessions => "too_many_sessions",
            Reject::SaslMechanism => "sasl_mechanism",
            Reject::SaslMalformed(_) => "sasl_malformed",
            Reject::OauthDiscovery => "oauth_discovery",
        }
    }

    /// The SQLSTATE of the PostgreSQL `ErrorResponse` a database client gets.
    pub fn sqlstate(self) -> &'static str {
        match self {
            // invalid_password: the password (the token) is not accepted.
            Reject::Unauthenticated(_) => "28P01",
            // invalid_authorization_specification: not for this listener at all.
            Reject::TenantMissing
            | Reject::WrongEnvironment
            | Reject::UnknownEnvironment
            | Reject::IssuerNotTrusted
            | Reject::TlsRequired
            | Reject::UnknownServerName
            | Reject::SaslMechanism
            | Reject::OauthDiscovery => "28000",
            // insufficient_privilege: who the caller is was accepted, what they ask is not.
            Reject::TenantNotMapped
            | Reject::RoleNotAllowed
            | Reject::RoleRequired
            | Reject::AdminRoleRequired
            | Reject::ReasonRequired
            | Reject::TestAccountForbidden
            | Reject::TestAccountLifetime
            | Reject::UnsafeTenantValue => "42501",
            // invalid_catalog_name: no database to open.
            Reject::NoDatabase => "3D000",
            // too_many_connections.
            Reject::DatabaseBusy
            | Reject::TooManySessions
            | Reject::RateLimited { .. }
            | Reject::QuotaExhausted { .. }
            | Reject::LimiterUnavailable
            | Reject::AuditUnavailable => "53300",
            // connection_failure: the server could not be reached or signed in to.
            Reject::UpstreamUnreachable | Reject::UpstreamUnavailable | Reject::UpstreamTimeout => "08006",
            // protocol_violation, and the HTTP-only refusals that cannot arise here.
            Reject::ProtocolViolation
            | Reject::SaslMalformed(_)
            | Reject::BadRequest
            | Reject::AmbiguousPath
            | Reject::UriTooLong
            | Reject::HeadersTooLarge
            | Reject::BodyTooLarge
            | Reject::RequestTimeout
            | Reject::MethodNotAllowed
            | Reject::NoRoute
            | Reject::CorsNotAllowed => "08P01",
        }
    }

    /// The gRPC status code of the refusal, for gRPC requests (which are answered
    /// with HTTP 200 and the status in `grpc-status`).
    pub fn grpc_status(self) -> GrpcStatus {
        match self {
            Reject::Unauthenticated(_) | Reject::TenantMissing | Reject::SaslMechanism | Reject::OauthDiscovery => {
                GrpcStatus::Unauthenticated
            }
            Reject::WrongEnvironment
            | Reject::UnknownEnvironment
            | Reject::IssuerNotTrusted
            | Reject::TenantNotMapped
            | Reject::RoleNotAllowed
            | Reject::RoleRequired
            | Reject::AdminRoleRequired
            | Reject::ReasonRequired
            | Reject::TestAccountForbidden
            | Reject::TestAccountLifetime
            | Reject::UnsafeTenantValue
            | Reject::CorsNotAllowed
            | Reject::TlsRequired
            | Reject::UnknownServerName => GrpcStatus::PermissionDenied,
            Reject::RateLimited { .. } | Reject::QuotaExhausted { .. } | Reject::BodyTooLarge => {
                GrpcStatus::ResourceExhausted
            }
            Reject::LimiterUnavailable
            | Reject::AuditUnavailable
            | Reject::UpstreamUnreachable
            | Reject::UpstreamUnavailable
            | Reject::DatabaseBusy
            | Reject::TooManySessions => GrpcStatus::Unavailable,
            Reject::UpstreamTimeout | Reject::RequestTimeout => GrpcStatus::DeadlineExceeded,
            Reject::NoRoute | Reject::MethodNotAllowed | Reject::NoDatabase => GrpcStatus::Unimplemented,
            Reject::BadRequest
            | Reject::AmbiguousPath
            | Reject::UriTooLong
            | Reject::HeadersTooLarge
            | Reject::ProtocolViolation
            | Reject::SaslMalformed(_) => GrpcStatus::InvalidArgument,
        }
    }

    /// `WWW-Authenticate` value for 401 answers (RFC 6750 section 3).
    pub fn www_authenticate(self) -> Option<&'static str> {
        match self {
            Reject::Unauthenticated(AuthError::Missing) => Some("Bearer realm=\"isogate\""),
            Reject::Unauthenticated(_) | Reject::TenantMissing => {
                Some("Bearer realm=\"isogate\", error=\"invalid_token\"")
            }
            _ => None,
        }
    }

    /// `Retry-After` for refusals that may succeed later.
    pub fn retry_after(self) -> Option<Duration> {
        match self {
            Reject::AuditUnavailable | Reject::UpstreamUnavailable | Reject::LimiterUnavailable => {
                Some(Duration::from_secs(1))
            }
            // Retry-After counts whole seconds; round up so a retry is not refused again.
            Reject::RateLimited { retry_after_ms } => Some(Duration::from_secs(retry_after_ms.div_ceil(1000).max(1))),
            Reject::QuotaExhausted { retry_after_s, .. } => Some(Duration::from_secs(retry_after_s.max(1))),
            _ => None,
        }
    }

    /// Whether the gateway refused the request itself (as opposed to an upstream failure).
    pub fn is_policy(self) -> bool {
        !matches!(
            self,
            Reject::UpstreamUnreachable | Reject::UpstreamUnavailable | Reject::UpstreamTimeout | Reject::DatabaseBusy
        )
    }

    /// The `RateLimit` field for 429 answers (draft-ietf-httpapi-ratelimit-headers):
    /// the exhausted policy item, nothing remaining, and seconds until reset.
    pub fn ratelimit_field(self) -> Option<String> {
        let item = match self {
            Reject::RateLimited { .. } => "burst",
            Reject::QuotaExhausted { window, .. } => window.as_str(),
            _ => return None,
        };
        let reset = self.retry_after().map_or(1, |d| d.as_secs());
        Some(format!("\"{item}\";r=0;t={reset}"))
    }

    /// The small JSON body: `{"error":"<reason>","status":<n>,"request_id":"<id>"}`.
    ///
    /// `request_id` is either validated client input or generated, so it never needs
    /// escaping (see `headers::valid_request_id`).
    pub fn body(self, request_id: &str) -> Vec<u8> {
        let mut status = itoa::Buffer::new();
        let mut out = Vec::with_capacity(64 + request_id.len());
        out.extend_from_slice(b"{\"error\":\"");
        out.extend_from_slice(self.reason().as_bytes());
        out.extend_from_slice(b"\",\"status\":");
        out.extend_from_slice(status.format(self.status()).as_bytes());
        out.extend_from_slice(b",\"request_id\":\"");
        out.extend_from_slice(request_id.as_bytes());
        out.extend_from_slice(b"\"}\n");
        out
    }
}

/// The gRPC status codes refusals map to (the numbers are gRPC's `Code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcStatus {
    /// 3: the request is malformed.
    InvalidArgument,
    /// 4: the upstream or the client took too long.
    DeadlineExceeded,
    /// 7: the caller may not make this call.
    PermissionDenied,
    /// 8: a rate, quota or size limit.
    ResourceExhausted,
    /// 12: no route serves the method.
    Unimplemented,
    /// 14: nothing can serve the call now; a retry may succeed.
    Unavailable,
    /// 16: no valid credentials.
    Unauthenticated,
}

impl GrpcStatus {
    /// The `grpc-status` value.
    pub fn code(self) -> &'static str {
        match self {
            GrpcStatus::InvalidArgument => "3",
            GrpcStatus::DeadlineExceeded => "4",
            GrpcStatus::PermissionDenied => "7",
            GrpcStatus::ResourceExhausted => "8",
            GrpcStatus::Unimplemented => "12",
            GrpcStatus::Unavailable => "14",
            GrpcStatus::Unauthenticated => "16",
        }
    }
}

/// Whether a request's `content-type` makes it a gRPC call (`application/grpc`,
/// `application/grpc+proto`, ...), whose refusals are written the gRPC way.
pub fn is_grpc(content_type: Option<&http::HeaderValue>) -> bool {
    content_type.is_some_and(|v| {
        let v = v.as_bytes();
        v.len() >= GRPC.len()
            && v[..GRPC.len()].eq_ignore_ascii_case(GRPC)
            && matches!(v.get(GRPC.len()), None | Some(b'+' | b';' | b'-'))
    })
}

const GRPC: &[u8] = b"application/grpc";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_json_with_reason_status_and_id() {
        let body = Reject::WrongEnvironment.body("abc-1");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], "wrong_environment");
        assert_eq!(v["status"], 403);
        assert_eq!(v["request_id"], "abc-1");
    }

    #[test]
    fn grpc_calls_are_told_apart_by_content_type() {
        let grpc = |v: &str| is_grpc(Some(&http::HeaderValue::from_str(v).unwrap()));
        assert!(grpc("application/grpc") && grpc("application/grpc+proto") && grpc("Application/GRPC"));
        assert!(grpc("application/grpc-web+proto"));
        assert!(!grpc("application/grpcx") && !grpc("application/json") && !grpc("application/grp"));
        assert!(!is_grpc(None));
    }

    #[test]
    fn refusals_map_to_the_grpc_codes_clients_expect() {
        assert_eq!(Reject::Unauthenticated(AuthError::Missing).grpc_status().code(), "16");
        assert_eq!(Reject::RoleRequired.grpc_status().code(), "7");
        assert_eq!(Reject::RateLimited { retry_after_ms: 10 }.grpc_status().code(), "8");
        assert_eq!(Reject::UpstreamUnavailable.grpc_status().code(), "14");
        assert_eq!(Reject::UpstreamUnreachable.grpc_status().code(), "14");
        assert_eq!(Reject::NoRoute.grpc_status().code(), "12");
    }

    #[test]
    fn missing_token_challenge_has_no_error_code() {
        assert_eq!(Reject::Unauthenticated(AuthError::Missing).www_authenticate(), Some("Bearer realm=\"isogate\""));
        assert!(Reject::Unauthenticated(AuthError::Expired).www_authenticate().unwrap().contains("invalid_token"));
        assert_eq!(Reject::NoRoute.www_authenticate(), None);
    }
}
