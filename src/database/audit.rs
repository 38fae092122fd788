//! The database front's audit lines: one when a session is admitted or refused, one
//! when an admitted session ends. They go through the same sink as the HTTP lines; the
//! field names are a stable interface.

use std::net::SocketAddr;
use std::time::SystemTime;

use serde::Serialize;

/// One line about a database session.
#[derive(Debug, Serialize)]
pub struct SessionRecord<'a> {
    /// When, RFC 3339 with microseconds, UTC.
    #[serde(serialize_with = "crate::audit::rfc3339_micros")]
    pub ts: SystemTime,
    /// `db_session_start` (admitted or refused) or `db_session_end`.
    pub event: &'static str,
    /// The session's id, the same on its start and end lines.
    pub session_id: &'a str,
    /// The listener's environment.
    pub environment: Option<&'a str>,
    /// Tenant claim, if verified.
    pub tenant: Option<&'a str>,
    /// User claim, if verified.
    pub user: Option<&'a str>,
    /// Roles claim.
    pub roles: &'a [String],
    /// Whether the token is a developer test account.
    pub test_account: bool,
    /// Issuer that verified (or, on refusal, was named by) the token.
    pub issuer: Option<&'a str>,
    /// The cleaned access reason the client gave.
    pub access_reason: Option<&'a str>,
    /// In a report-only environment: the refusal the access rules would have made.
    pub report_only: Option<&'static str>,
    /// The database target.
    pub database: Option<&'a str>,
    /// The login role the server connection signed in as.
    pub login_role: Option<&'a str>,
    /// The session's schema (its `search_path`).
    pub db_schema: Option<&'a str>,
    /// `allow` or `deny`.
    pub decision: &'static str,
    /// Refusal reason; `ok` when admitted.
    pub reason: &'static str,
    /// The SQLSTATE the client was sent, on refusal.
    pub sqlstate: Option<&'static str>,
    /// Client address.
    pub client: Option<SocketAddr>,
    /// Whether the client spoke TLS.
    pub tls: bool,
    /// The server's address.
    pub server: Option<SocketAddr>,
    /// Whether the server connection served an earlier session.
    pub server_reused: Option<bool>,
    /// On the end line: the session's length, in microseconds.
    pub duration_us: Option<u64>,
    /// On the end line: bytes from the client to the server.
    pub bytes_in: Option<u64>,
    /// On the end line: bytes from the server to the client.
    pub bytes_out: Option<u64>,
    /// On the end line: simple queries and executes the client sent.
    pub statements: Option<u64>,
    /// On the end line: whether the server connection was reset and kept.
    pub server_kept: Option<bool>,
}

/// One statement of a session that gave an access reason, on a target that audits them.
#[derive(Debug, Serialize)]
pub struct StatementRecord<'a> {
    /// When the statement passed, RFC 3339 with microseconds, UTC.
    #[serde(serialize_with = "crate::audit::rfc3339_micros")]
    pub ts: SystemTime,
    /// `db_statement`.
    pub event: &'static str,
    /// The session's id, as on its start and end lines.
    pub session_id: &'a str,
    /// The listener's environment.
    pub environment: &'a str,
    /// Tenant claim.
    pub tenant: Option<&'a str>,
    /// User claim.
    pub user: Option<&'a str>,
    /// The access reason the session gave.
    pub access_reason: Option<&'a str>,
    /// The statement text (a simple query, or the query of an extended-protocol
    /// `Parse`), at most 1024 bytes, invalid UTF-8 replaced.
    pub statement: &'a str,
    /// Whether the text was cut.
    pub truncated: bool,
}
