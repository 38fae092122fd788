//! A real PostgreSQL server for the tests (Debian's package): `initdb` into a scratch
//! directory, an ephemeral port on 127.0.0.1, its unix socket in that directory. As
//! root it runs as the unprivileged `postgres` user (PostgreSQL refuses root). A shell
//! guard stops it and removes the directory once the test process is gone, so one server
//! can serve every test of a file.
//!
//! Also a TLS connector for tokio-postgres over rustls, trusting the test CA, and the
//! client-side helpers the database tests share (connect, read a column, SQLSTATE, audit
//! lines).

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_postgres::{Client, Config};

use super::{eventually, Gateway};

/// A running PostgreSQL server.
pub struct Postgres {
    pub port: u16,
    pub dir: PathBuf,
    bin: PathBuf,
    /// The guard outlives this value on purpose: it ends with the test process.
    _guard: std::process::Child,
}

fn running_as_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

/// The newest installed major version's binaries.
fn bin_dir() -> PathBuf {
    let mut majors: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (scripts/dev test installs Debian's postgresql)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("postgres").exists())
        .collect();
    majors.sort();
    majors.pop().expect("no PostgreSQL server binaries under /usr/lib/postgresql")
}

impl Postgres {
    /// Starts a server; `setup` is SQL run as the superuser in database `app`.
    pub fn start(setup: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("isogate-pg-{}-{}", std::process::id(), super::free_addr().port()));
        std::fs::create_dir_all(&dir).unwrap();
        let root = running_as_root();
        if root {
            assert!(Command::new("chown").arg("postgres:postgres").arg(&dir).status().unwrap().success());
        }
        let bin = bin_dir();
        let data = dir.join("data");
        let as_owner = |program: &Path| {
            if root {
                let mut c = Command::new("setpriv");
                c.args(["--reuid=postgres", "--regid=postgres", "--init-groups", "--"]).arg(program);
                c
            } else {
                Command::new(program)
            }
        };
        let out = as_owner(&bin.join("initdb"))
            .args(["-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"])
            .arg("-D")
            .arg(&data)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        // TLS with the test CA's leaf for `a.test`; the key must be the server user's, 0600.
        let fixtures = format!("{}/tests/fixtures/tls", env!("CARGO_MANIFEST_DIR"));
        for (from, to) in [("a.pem", "server.pem"), ("a.key", "server.key")] {
            std::fs::copy(format!("{fixtures}/{from}"), dir.join(to)).unwrap();
            assert!(Command::new("chmod").arg("600").arg(dir.join(to)).status().unwrap().success());
            if root {
                assert!(Command::new("chown").arg("postgres:postgres").arg(dir.join(to)).status().unwrap().success());
            }
        }
        let port = super::free_addr().port();
        // The guard runs the server, and stops it (fast shutdown) when this process ends.
        let guard = format!(
            "{postgres} -D {data} -p {port} -k {dir} -c listen_addresses=127.0.0.1 -c fsync=off \
             -c max_connections=60 -c log_min_messages=warning -c ssl=on \
             -c ssl_cert_file={dir}/server.pem -c ssl_key_file={dir}/server.key >{dir}/server.log 2>&1 & pg=$!; \
             while [ -d /proc/{parent} ] && kill -0 $pg 2>/dev/null; do sleep 0.5; done; \
             kill -INT $pg 2>/dev/null; wait $pg; rm -rf {dir}",
            postgres = bin.join("postgres").display(),
            data = data.display(),
            dir = dir.display(),
            parent = std::process::id(),
        );
        let mut sh = if root {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=postgres", "--regid=postgres", "--init-groups", "--", "sh", "-c", &guard]);
            c
        } else {
            let mut c = Command::new("sh");
            c.args(["-c", &guard]);
            c
        };
        let guard = sh.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let pg = Self { port, dir, bin, _guard: guard };
        let started = Instant::now();
        while pg.try_sql("postgres", "SELECT 1").is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "PostgreSQL did not start: {:?}", pg.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        pg.sql("postgres", "CREATE DATABASE app");
        pg.sql("app", setup);
        pg
    }

    /// Puts `lines` in front of pg_hba.conf (the first matching line decides), makes
    /// the server ask TLS clients for a certificate signed by the test CA (`ssl_ca_file`;
    /// only lines with `clientcert=` require one), and reloads, waiting until a new
    /// backend runs with the reloaded files.
    pub fn configure_access(&self, lines: &str) {
        let hba = self.dir.join("data/pg_hba.conf");
        let rest = std::fs::read_to_string(&hba).unwrap();
        std::fs::write(&hba, format!("{lines}\n{rest}")).unwrap();
        let ca = self.dir.join("client-ca.pem");
        std::fs::copy(format!("{}/tests/fixtures/tls/ca.pem", env!("CARGO_MANIFEST_DIR")), &ca).unwrap();
        self.sql("postgres", &format!("ALTER SYSTEM SET ssl_ca_file = '{}'", ca.display()));
        let loaded = "SELECT pg_conf_load_time()";
        let before = self.sql("postgres", loaded);
        self.sql("postgres", "SELECT pg_reload_conf()");
        eventually("the server to reload its configuration", || (self.sql("postgres", loaded) != before).then_some(()));
        let rules = self.sql("postgres", "SELECT count(*) FROM pg_hba_file_rules WHERE error IS NOT NULL");
        assert_eq!(rules, "0", "pg_hba.conf has errors: {}", self.sql("postgres", "TABLE pg_hba_file_rules"));
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Runs `sql` as the superuser over the unix socket; the output, unaligned.
    pub fn try_sql(&self, database: &str, sql: &str) -> Result<String, String> {
        self.psql_superuser(database, &["-c", sql])
    }

    /// Runs `sql` as the superuser, panicking on error.
    pub fn sql(&self, database: &str, sql: &str) -> String {
        self.try_sql(database, sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Runs psql as the superuser with `args` (e.g. `-v`, `-f`).
    pub fn psql_superuser(&self, database: &str, args: &[&str]) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-d", database])
            .arg("-h")
            .arg(&self.dir)
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        psql_result(&out)
    }

    /// Runs the shipped provisioning script `deploy/postgres/{file}` as the superuser in
    /// database `app`, with psql variables `vars`.
    pub fn deploy(&self, file: &str, vars: &[(&str, &str)]) {
        let path = format!("{}/deploy/postgres/{file}", env!("CARGO_MANIFEST_DIR"));
        let mut args = vec!["-f".to_owned(), path];
        for (k, v) in vars {
            args.push("-v".to_owned());
            args.push(format!("{k}={v}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.psql_superuser("app", &args).unwrap_or_else(|e| panic!("{file}: {e}"));
    }

    /// psql, the way a user runs it: to `addr` over TLS with `password` (the token).
    pub fn psql_client(
        &self,
        addr: std::net::SocketAddr,
        password: &str,
        extra: &str,
        sql: &str,
    ) -> Result<String, String> {
        let conninfo =
            format!("host={} port={} user=anyone dbname=app sslmode=require {extra}", addr.ip(), addr.port());
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d", &conninfo, "-c", sql])
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .map_err(|e| e.to_string())?;
        psql_result(&out)
    }
}

/// tokio-postgres over rustls, trusting the test CA, sending and verifying the server
/// name `a.test` (or another), and offering ALPN `postgresql` (so it also works with
/// direct TLS).
#[derive(Clone)]
pub struct RustlsConnect(Arc<rustls::ClientConfig>, ServerName<'static>);

impl RustlsConnect {
    pub fn new() -> Self {
        Self::with_server_name("a.test")
    }

    /// Sends `name` as the TLS server name (SNI) and verifies the certificate against it.
    pub fn with_server_name(name: &str) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = rustls::RootCertStore::empty();
        let ca = format!("{}/tests/fixtures/tls/ca.pem", env!("CARGO_MANIFEST_DIR"));
        for cert in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let mut config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Self(Arc::new(config), ServerName::try_from(name.to_owned()).unwrap())
    }
}

impl<S> MakeTlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = std::io::Error;

    fn make_tls_connect(&mut self, _domain: &str) -> Result<Self::TlsConnect, Self::Error> {
        Ok(self.clone())
    }
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let connector = tokio_rustls::TlsConnector::from(self.0);
            let stream = connector.connect(self.1, stream).await?;
            Ok(RustlsStream(stream))
        })
    }
}

pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

/// A PostgreSQL client written out by hand over rustls (`SSLRequest`, then TLS with the
/// test CA), for the sign-in exchanges no installed client speaks (SASL OAUTHBEARER):
/// the test sends each message byte for byte and reads what comes back.
pub struct RawClient(tokio_rustls::client::TlsStream<tokio::net::TcpStream>);

impl RawClient {
    /// Connects to `addr`, switches to TLS, and sends a startup packet (user `anyone`,
    /// database `app`).
    pub async fn start(addr: std::net::SocketAddr) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).await.unwrap();
        assert_eq!(tcp.read_u8().await.unwrap(), b'S', "the listener accepts SSLRequest");
        let RustlsConnect(config, _) = RustlsConnect::new();
        let tls = tokio_rustls::TlsConnector::from(config);
        let mut client = Self(tls.connect(ServerName::try_from("a.test").unwrap(), tcp).await.unwrap());
        let mut startup = (3u32 << 16).to_be_bytes().to_vec();
        startup.extend_from_slice(b"user\0anyone\0database\0app\0\0");
        let mut packet = u32::try_from(startup.len() + 4).unwrap().to_be_bytes().to_vec();
        packet.extend_from_slice(&startup);
        client.0.write_all(&packet).await.unwrap();
        client
    }

    /// Sends one message: type `tag`, length, `body`.
    pub async fn send(&mut self, tag: u8, body: &[u8]) {
        let mut message = vec![tag];
        message.extend_from_slice(&u32::try_from(body.len() + 4).unwrap().to_be_bytes());
        message.extend_from_slice(body);
        // The gateway may already have closed after a refusal; the reply tells.
        self.send_raw(&message).await;
    }

    /// Sends `bytes` as they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        let _ = self.0.write_all(bytes).await;
        let _ = self.0.flush().await;
    }

    /// Reads one message (type and body); `None` once the server closed.
    pub async fn read(&mut self) -> Option<(u8, Vec<u8>)> {
        use tokio::io::AsyncReadExt;
        let read = async {
            let tag = self.0.read_u8().await.ok()?;
            let length = usize::try_from(self.0.read_u32().await.ok()?).ok()?;
            let mut body = vec![0; length.checked_sub(4)?];
            self.0.read_exact(&mut body).await.ok()?;
            Some((tag, body))
        };
        tokio::time::timeout(Duration::from_secs(15), read).await.expect("the gateway answers in time")
    }

    /// Reads messages up to `ReadyForQuery` and checks the session is open
    /// (`AuthenticationOk` first, no error).
    pub async fn expect_ready(&mut self) {
        let mut authenticated = false;
        loop {
            match self.read().await {
                Some((b'R', body)) => authenticated = body == [0, 0, 0, 0],
                Some((b'Z', _)) => break assert!(authenticated, "AuthenticationOk came first"),
                Some((b'E', body)) => panic!("refused: {:?}", error_fields(&body)),
                Some(_) => {}
                None => panic!("the gateway closed the session"),
            }
        }
    }

    /// Runs `sql` with the simple query protocol: each row's first column, or the
    /// SQLSTATE of the error.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<String>, String> {
        let mut body = sql.as_bytes().to_vec();
        body.push(0);
        self.send(b'Q', &body).await;
        let (mut rows, mut error) = (Vec::new(), None);
        loop {
            match self.read().await.expect("an answer to the query") {
                (b'D', row) => {
                    let length = i32::from_be_bytes(row[2..6].try_into().unwrap());
                    let value = usize::try_from(length).map_or(&b"NULL"[..], |n| &row[6..6 + n]);
                    rows.push(String::from_utf8_lossy(value).into_owned());
                }
                (b'E', body) => error = Some(error_fields(&body).0),
                (b'Z', _) => return error.map_or(Ok(rows), Err),
                _ => {}
            }
        }
    }
}

/// The SQLSTATE (`C`) and message (`M`) of an `ErrorResponse` body.
pub fn error_fields(body: &[u8]) -> (String, String) {
    let field = |code: u8| {
        body.split(|b| *b == 0)
            .find(|f| f.first() == Some(&code))
            .map(|f| String::from_utf8_lossy(&f[1..]).into_owned())
            .unwrap_or_default()
    };
    (field(b'C'), field(b'M'))
}

/// psql's answer: its output when it succeeded, else what it said on stderr.
fn psql_result(out: &std::process::Output) -> Result<String, String> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The password the gateway derives for `role` under `secret` (HMAC-SHA256, hex),
/// computed here on its own.
pub fn derived_password(secret: &str, role: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(role.as_bytes());
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// A runtime for tokio-postgres clients. Two workers: connection tasks go on while a
/// test waits for audit lines.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// tokio-postgres to `addr` with `password` (the token) over TLS (`tls`), with `tune`
/// applied to the configuration.
pub async fn connect_tls(
    addr: SocketAddr,
    password: &str,
    tls: RustlsConnect,
    tune: impl FnOnce(&mut Config),
) -> Result<Client, tokio_postgres::Error> {
    let mut config = Config::new();
    config.host("127.0.0.1").port(addr.port()).user("anyone").dbname("app").password(password);
    config.ssl_mode(SslMode::Require).connect_timeout(Duration::from_secs(10));
    tune(&mut config);
    let (client, connection) = config.connect(tls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// `connect_tls` with the server name `a.test`.
pub async fn connect_with(
    addr: SocketAddr,
    password: &str,
    tune: impl FnOnce(&mut Config),
) -> Result<Client, tokio_postgres::Error> {
    connect_tls(addr, password, RustlsConnect::new(), tune).await
}

pub async fn connect(addr: SocketAddr, password: &str) -> Result<Client, tokio_postgres::Error> {
    connect_with(addr, password, |_| {}).await
}

/// The first column of every row, as text.
pub async fn column(client: &Client, sql: &str) -> Result<Vec<String>, tokio_postgres::Error> {
    let rows = client.simple_query(sql).await?;
    Ok(rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("NULL").to_owned()),
            _ => None,
        })
        .collect())
}

pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_owned()).unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}

/// The database audit lines with `event`, waiting until `count` are written.
pub fn db_audit(gw: &Gateway, event: &str, count: usize) -> Vec<Value> {
    eventually(&format!("{count} {event} audit line(s)"), || {
        let lines: Vec<Value> = gw.audit_lines().into_iter().filter(|l| l["event"] == event).collect();
        (lines.len() >= count).then_some(lines)
    })
}
