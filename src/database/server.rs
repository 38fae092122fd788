//! One connection from the gateway to a PostgreSQL server: signing in as a login role
//! (SCRAM-SHA-256, MD5 or cleartext, as the server asks; cleartext only over TLS), and
//! the reset that makes it fit for the next client of the same role.

use std::net::SocketAddr;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::codec::BackendKey;
use super::server_stream::{ServerStream, ServerTls};

/// Why a server connection could not be opened or reused.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The server answered with an error.
    #[error("the server refused: {sqlstate} {message}")]
    Refused {
        /// Its SQLSTATE.
        sqlstate: String,
        /// Its message.
        message: String,
    },
    /// The server said something the gateway did not expect here.
    #[error("unexpected message from the server: {0}")]
    Unexpected(&'static str),
    /// The server asked for the password in clear text over a connection without TLS,
    /// where anyone on the path could read it; the gateway does not send it.
    #[error("the server asks for the password in clear text, and the connection is not TLS: not sent")]
    CleartextWithoutTls,
    /// After the reset, the session still held state of the previous client.
    #[error("the session state survived the reset")]
    NotClean,
}

/// Checks, after `DISCARD ALL`, that nothing of the previous client is left: the
/// session runs as its login role, with no prepared statement, cursor, advisory lock,
/// listened channel or temporary table. Every name is schema-qualified, so objects a
/// client created cannot stand in for the catalog's.
const VERIFY_RESET: &str = "SELECT current_user OPERATOR(pg_catalog.=) session_user \
     AND NOT EXISTS (SELECT FROM pg_catalog.pg_prepared_statements) \
     AND NOT EXISTS (SELECT FROM pg_catalog.pg_cursors) \
     AND NOT EXISTS (SELECT FROM pg_catalog.pg_locks l WHERE l.locktype = 'advisory' \
         AND l.pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid()) \
     AND NOT EXISTS (SELECT FROM pg_catalog.pg_listening_channels()) \
     AND NOT EXISTS (SELECT FROM pg_catalog.pg_class c \
         WHERE c.relnamespace OPERATOR(pg_catalog.=) pg_catalog.pg_my_temp_schema())";

/// A signed-in server connection.
#[derive(Debug)]
pub struct ServerConn {
    stream: ServerStream,
    /// Bytes read from the server and not handled yet.
    buf: BytesMut,
    /// The server's `ParameterStatus` values at sign-in, replayed to each client.
    pub params: Vec<(String, String)>,
    /// The server's cancel key for this backend.
    pub key: BackendKey,
    /// The server's address (where cancel requests go).
    pub addr: SocketAddr,
    /// Transaction status of the last `ReadyForQuery`.
    pub status: u8,
}

/// What a server connection signs in with.
#[derive(Debug, Clone, Copy)]
pub struct SignIn<'a> {
    /// Host name or address.
    pub host: &'a str,
    /// Port.
    pub port: u16,
    /// Database.
    pub database: &'a str,
    /// Login role.
    pub role: &'a str,
    /// Its password.
    pub password: &'a str,
    /// The session's `search_path`, when the environment renders a schema.
    pub schema: Option<&'a str>,
    /// TLS to the server, when the target asks for it.
    pub tls: Option<&'a ServerTls>,
}

impl ServerConn {
    /// Connects and signs in.
    pub async fn connect(to: &SignIn<'_>) -> Result<Self, ServerError> {
        let tcp = TcpStream::connect((to.host, to.port)).await?;
        tcp.set_nodelay(true)?;
        let addr = tcp.peer_addr()?;
        let stream = match to.tls {
            Some(tls) => ServerStream::tls(tcp, tls).await?,
            None => ServerStream::Plain(tcp),
        };
        let mut conn = Self {
            stream,
            buf: BytesMut::with_capacity(8192),
            params: Vec::new(),
            key: BackendKey { pid: 0, secret: 0 },
            addr,
            status: b'I',
        };
        let mut params = vec![
            ("user", to.role),
            ("database", to.database),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO"),
            ("application_name", "isogate"),
        ];
        if let Some(schema) = to.schema {
            params.push(("search_path", schema));
        }
        let mut out = BytesMut::new();
        frontend::startup_message(params, &mut out)?;
        conn.stream.write_all(&out).await?;
        conn.stream.flush().await?;
        conn.authenticate(to).await?;
        conn.until_ready(true).await?;
        Ok(conn)
    }

    async fn authenticate(&mut self, to: &SignIn<'_>) -> Result<(), ServerError> {
        let mut out = BytesMut::new();
        let mut scram = None;
        loop {
            out.clear();
            match self.next().await? {
                Message::AuthenticationOk => return Ok(()),
                Message::AuthenticationCleartextPassword => {
                    if !self.stream.is_tls() {
                        return Err(ServerError::CleartextWithoutTls);
                    }
                    frontend::password_message(to.password.as_bytes(), &mut out)?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let hash = md5_hash(to.role.as_bytes(), to.password.as_bytes(), body.salt());
                    frontend::password_message(hash.as_bytes(), &mut out)?;
                }
                Message::AuthenticationSasl(body) => {
                    let mut mechanisms = body.mechanisms();
                    if !mechanisms.any(|m| Ok(m == SCRAM_SHA_256))? {
                        return Err(ServerError::Unexpected("no SASL mechanism the gateway speaks"));
                    }
                    let s = ScramSha256::new(to.password.as_bytes(), ChannelBinding::unsupported());
                    frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut out)?;
                    scram = Some(s);
                }
                Message::AuthenticationSaslContinue(body) => {
                    let s = scram.as_mut().ok_or(ServerError::Unexpected("SASL continue before SASL start"))?;
                    s.update(body.data())?;
                    frontend::sasl_response(s.message(), &mut out)?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let s = scram.as_mut().ok_or(ServerError::Unexpected("SASL final before SASL start"))?;
                    s.finish(body.data())?;
                    continue;
                }
                Message::ErrorResponse(body) => return Err(refused(&body)),
                _ => return Err(ServerError::Unexpected("an authentication method the gateway does not speak")),
            }
            self.stream.write_all(&out).await?;
            self.stream.flush().await?;
        }
    }

    /// Reads up to `ReadyForQuery`, keeping parameters and the cancel key when `startup`.
    /// Returns the first column of the first row, if a row came.
    async fn until_ready(&mut self, startup: bool) -> Result<Option<Vec<u8>>, ServerError> {
        let mut first = None;
        let mut error = None;
        loop {
            match self.next().await? {
                Message::ReadyForQuery(body) => {
                    self.status = body.status();
                    return error.map_or(Ok(first), Err);
                }
                Message::ParameterStatus(body) if startup => {
                    self.params.push((body.name()?.to_owned(), body.value()?.to_owned()));
                }
                Message::BackendKeyData(body) if startup => {
                    self.key = BackendKey { pid: body.process_id(), secret: body.secret_key() };
                }
                Message::DataRow(row) if first.is_none() => {
                    let range = row.ranges().next()?.flatten();
                    first = Some(range.map_or_else(Vec::new, |r| row.buffer()[r].to_vec()));
                }
                Message::ErrorResponse(body) => {
                    let e = refused(&body);
                    if startup {
                        return Err(e);
                    }
                    error.get_or_insert(e);
                }
                _ => {}
            }
        }
    }

    /// Runs one simple query; its first value, if it returned a row.
    async fn simple(&mut self, sql: &str) -> Result<Option<Vec<u8>>, ServerError> {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out)?;
        self.stream.write_all(&out).await?;
        self.stream.flush().await?;
        self.until_ready(false).await
    }

    /// Makes the connection fit for the next client: rolls back an open transaction,
    /// runs `DISCARD ALL`, and verifies that no state survived it. Any failure means the
    /// connection must be closed.
    pub async fn reset(&mut self) -> Result<(), ServerError> {
        if self.status != b'I' {
            self.simple("ROLLBACK").await?;
        }
        self.simple("DISCARD ALL").await?;
        match self.simple(VERIFY_RESET).await?.as_deref() {
            Some(b"t") if self.status == b'I' => Ok(()),
            _ => Err(ServerError::NotClean),
        }
    }

    /// Whether an idle connection still looks usable: the server has neither closed it
    /// nor sent anything since it went idle.
    pub fn idle_and_open(&self) -> bool {
        self.buf.is_empty() && self.stream.idle_and_open()
    }

    /// The socket and the bytes read ahead from it, for relaying.
    pub fn parts(&mut self) -> (&mut ServerStream, &mut BytesMut) {
        (&mut self.stream, &mut self.buf)
    }

    async fn next(&mut self) -> Result<Message, ServerError> {
        loop {
            if let Some(message) = Message::parse(&mut self.buf)? {
                return Ok(message);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(ServerError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }
}

fn refused(body: &postgres_protocol::message::backend::ErrorResponseBody) -> ServerError {
    let (mut sqlstate, mut message) = (String::new(), String::new());
    let mut fields = body.fields();
    while let Ok(Some(field)) = fields.next() {
        match field.type_() {
            b'C' => sqlstate = String::from_utf8_lossy(field.value_bytes()).into_owned(),
            b'M' => message = String::from_utf8_lossy(field.value_bytes()).into_owned(),
            _ => {}
        }
    }
    ServerError::Refused { sqlstate, message }
}
