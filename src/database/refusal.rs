//! What a refused database client reads: the `ErrorResponse` message and hint for each
//! refusal (its SQLSTATE is in `reject`'s table). The hint says what to fix.

use crate::auth::AuthError;
use crate::config::file::ClientAuth;
use crate::reject::Reject;

/// Message and hint for `reject` on a listener of environment `env` that takes the
/// token as `how` says.
pub fn explain(reject: Reject, env: &str, how: ClientAuth) -> (String, String) {
    let (text, hint): (String, String) = match reject {
        Reject::Unauthenticated(e) if how == ClientAuth::Oauthbearer => (
            format!("OAuth bearer authentication failed: the token is not accepted ({})", e.reason()),
            "sign in again and connect with a fresh JWT from a configured issuer".into(),
        ),
        Reject::Unauthenticated(AuthError::Expired) => (
            "the token given as the password has expired".into(),
            "sign in again and connect with the fresh token as the password".into(),
        ),
        Reject::Unauthenticated(AuthError::NotYetValid) => (
            "the token given as the password is not valid yet".into(),
            "check the clock of the machine that issued it".into(),
        ),
        Reject::Unauthenticated(e) => (
            format!("the password is not an accepted token ({})", e.reason()),
            "connect with a JWT from a configured issuer as the password (PGPASSWORD)".into(),
        ),
        Reject::WrongEnvironment => (
            format!("the token is not for environment `{env}`, which this listener serves"),
            format!("use a token issued for `{env}`, or the listener of the token's environment"),
        ),
        Reject::UnknownEnvironment => {
            ("the environment cannot be determined".into(), "use a token with an environment claim".into())
        }
        Reject::IssuerNotTrusted => (
            format!("environment `{env}` does not accept tokens of this issuer"),
            "use a token from an issuer this environment trusts".into(),
        ),
        Reject::TenantMissing => ("the token names no tenant".into(), "use a token with a tenant claim".into()),
        Reject::TenantNotMapped => (
            format!("the token's tenant has no database in environment `{env}`"),
            "ask an operator to map the tenant".into(),
        ),
        Reject::RoleNotAllowed | Reject::RoleRequired | Reject::AdminRoleRequired => (
            format!("none of the token's roles may open a database session in `{env}`"),
            "use a token with a role this environment allows".into(),
        ),
        Reject::ReasonRequired => (
            format!("your role must give an access reason in `{env}`"),
            "connect with options='-c isogate.reason=your\\ reason' or application_name='reason: your reason'".into(),
        ),
        Reject::TestAccountForbidden | Reject::TestAccountLifetime => (
            "test accounts may not open this session".into(),
            "use a test token that lives at most as long as allowed, or a regular account".into(),
        ),
        Reject::UnsafeTenantValue => (
            "the token's tenant or user cannot name a database role".into(),
            "tenant ids used in database role names are lowercase letters, digits and `_`".into(),
        ),
        Reject::NoDatabase => (
            format!("no database is configured for this tenant in `{env}`"),
            "ask an operator to set db_pool to a [databases.NAME] entry".into(),
        ),
        Reject::UnknownServerName => (
            "this listener chooses the environment by the TLS server name, and the connection named none it serves"
                .into(),
            "connect with host=<the database's server name> (add hostaddr=<ip> if the name does not resolve) \
             and keep sslsni=1"
                .into(),
        ),
        Reject::TlsRequired => {
            ("this listener serves TLS connections only".into(), "connect with sslmode=require (or verify-full)".into())
        }
        Reject::DatabaseBusy => (
            "every server connection of the database is busy".into(),
            "retry later, or ask an operator to raise max_server_connections".into(),
        ),
        Reject::TooManySessions => (
            "this listener already holds as many client sessions as it may".into(),
            "retry later, or ask an operator to raise database_listeners.max_sessions".into(),
        ),
        Reject::SaslMechanism => (
            "this listener takes the token by SASL OAUTHBEARER only".into(),
            "connect with a PostgreSQL 18 client and a bearer token, or to a listener taking it as the password".into(),
        ),
        Reject::SaslMalformed(e) => (
            format!("malformed OAUTHBEARER message: {e}"),
            "use a client that speaks SASL OAUTHBEARER as RFC 7628 describes".into(),
        ),
        Reject::OauthDiscovery => (
            "OAuth bearer authentication needs a token; the server's OAuth parameters were sent".into(),
            "connect again with a bearer token from the issuer".into(),
        ),
        Reject::UpstreamUnreachable | Reject::UpstreamUnavailable | Reject::UpstreamTimeout => (
            "the database server cannot be reached or refused the gateway".into(),
            "retry later; the gateway's log says why".into(),
        ),
        _ => {
            ("the client broke the PostgreSQL protocol".into(), "use a PostgreSQL client speaking protocol 3.0".into())
        }
    };
    (text, hint)
}
