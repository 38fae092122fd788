//! TLS termination over real sockets with certificates made for the tests (a CA and two
//! leaf certificates): the certificate is chosen by SNI, HTTP/2 is offered by ALPN, and
//! a reload swaps certificates without a restart.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use common::jws::{claims, token};
use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

fn tls_dir() -> String {
    format!("{}/tests/fixtures/tls", env!("CARGO_MANIFEST_DIR"))
}

fn config(ups: &Upstreams, a_cert: &str) -> String {
    let d = tls_dir();
    format!(
        r#"
{PREAMBLE}[[listeners]]
address = "@TLS@"
tls = true
http2 = true
[[certificates]]
cert_file = "{d}/{a_cert}.pem"
key_file = "{d}/{a_cert}.key"
server_names = ["a.test"]
[[certificates]]
cert_file = "{d}/b.pem"
key_file = "{d}/b.key"
server_names = ["b.test"]
{HMAC_ISSUER}[environments.prod]
hosts = ["a.test", "b.test", "c.test"]
default_pool = "app"
[pools.app]
servers = ["{}"]
[[routes]]
name = "api"
path_prefix = "/api"
"#,
        ups.get("app").addr
    )
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Connects with SNI `name`, trusting only the test CA; returns the negotiated ALPN, or
/// the handshake error.
fn handshake(addr: SocketAddr, name: &str, alpn: &[&[u8]]) -> Result<(Option<Vec<u8>>, TlsStream), String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(format!("{}/ca.pem", tls_dir())).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let conn = rustls::ClientConnection::new(Arc::new(config), ServerName::try_from(name.to_owned()).unwrap()).unwrap();
    let mut stream = rustls::StreamOwned::new(conn, TcpStream::connect(addr).unwrap());
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock).map_err(|e| e.to_string())?;
    }
    Ok((stream.conn.alpn_protocol().map(<[u8]>::to_vec), stream))
}

fn get_over_tls(addr: SocketAddr, name: &str) -> Result<String, String> {
    let (_, mut stream) = handshake(addr, name, &[b"http/1.1"])?;
    let t = token("HS256", claims("prod", "acme"));
    write!(stream, "GET /api HTTP/1.1\r\nhost: {name}\r\nauthorization: Bearer {t}\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = stream.read_to_string(&mut out);
    Ok(out)
}

#[test]
fn the_certificate_is_chosen_by_sni_and_http2_is_offered() {
    let ups = Upstreams::start(&["app"]);
    let tls = free_addr();
    let gw = Gateway::start(&config(&ups, "a"), &[("@TLS@", tls)]);
    for name in ["a.test", "b.test"] {
        let answer = get_over_tls(tls, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(answer.starts_with("HTTP/1.1 200"), "{name}: {answer}");
    }
    // An unknown name gets the first certificate, which is not valid for it.
    let err = handshake(tls, "c.test", &[]).err().unwrap();
    assert!(err.contains("NotValidForName") || err.contains("not valid for"), "{err}");
    let (alpn, _) = handshake(tls, "a.test", &[b"h2", b"http/1.1"]).unwrap();
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    // The plain listener still works alongside.
    assert_eq!(gw.get_with_token("a.test", "/api", &token("HS256", claims("prod", "acme"))).status, 200);
}

#[test]
fn a_reload_swaps_certificates_without_a_restart() {
    let ups = Upstreams::start(&["app"]);
    let tls = free_addr();
    let gw = Gateway::start(&config(&ups, "a"), &[("@TLS@", tls)]);
    assert!(get_over_tls(tls, "a.test").is_ok());
    // Serve b's certificate for a.test: clients verifying a.test now fail.
    let swapped = config(&ups, "b").replace("server_names = [\"b.test\"]", "server_names = [\"other.test\"]");
    gw.write_config(&swapped.replace("@TLS@", &tls.to_string()));
    gw.signal("HUP");
    eventually("the new certificate is served", || get_over_tls(tls, "a.test").err());
}

/// A GET with curl over HTTP/2 (ALPN), sending the path as it is; returns the status.
fn curl_h2(tls: SocketAddr, path: &str, token: &str) -> String {
    let url = format!("https://a.test:{}{path}", tls.port());
    let out = std::process::Command::new("curl")
        .args(["-sS", "--http2", "--path-as-is", "-o", "/dev/null", "-w", "%{http_version} %{http_code}"])
        .args(["--cacert", &format!("{}/ca.pem", tls_dir())])
        .args(["--resolve", &format!("a.test:{}:127.0.0.1", tls.port())])
        .args(["-H", &format!("authorization: Bearer {token}"), &url])
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn http2_requests_keep_their_host_through_normalisation_and_rewrites() {
    let ups = Upstreams::start(&["app"]);
    let tls = free_addr();
    let files = "[[routes]]\nname = \"files\"\npath_prefix = \"/files\"\nrewrite_prefix = \"/buckets/{tenant}\"\n";
    let gw = Gateway::start(&format!("{}{files}", config(&ups, "a")), &[("@TLS@", tls)]);
    let t = token("HS256", claims("prod", "acme"));
    assert_eq!(curl_h2(tls, "/api/./orders", &t), "2 200");
    assert_eq!(curl_h2(tls, "/files/report.pdf", &t), "2 200");
    let got = ups.get("app").received();
    assert_eq!(got.len(), 2);
    assert_eq!(
        (got[0].path.as_str(), got[0].header("host")),
        ("/api/orders", Some(format!("a.test:{}", tls.port()).as_str()))
    );
    assert_eq!(got[1].path, "/buckets/acme/report.pdf");
    assert_eq!(got[1].header("host"), got[0].header("host"), "the rewrite kept the :authority");
    drop(gw);
}

fn upstream_config(up: SocketAddr, pool_tls: &str) -> String {
    format!(
        r#"
{PREAMBLE}{HMAC_ISSUER}[environments.prod]
hosts = ["prod.test"]
default_pool = "secure"
[pools.secure]
servers = ["{up}"]
eject_after_failures = 0
tls = true
{pool_tls}
[[routes]]
name = "api"
path_prefix = "/api"
"#
    )
}

fn status(gw: &Gateway) -> (u16, String) {
    let r = gw.get_with_token("prod.test", "/api", &token("HS256", claims("prod", "acme")));
    (r.status, r.json()["upstream"].as_str().or(r.json()["error"].as_str()).unwrap_or("").to_owned())
}

#[test]
fn upstream_tls_verifies_the_server_against_the_configured_ca_and_sni() {
    let up = common::tls_upstream::TlsUpstream::start(false);
    let d = tls_dir();
    let ok =
        Gateway::start(&upstream_config(up.addr, &format!("sni = \"upstream.test\"\nca_file = \"{d}/ca.pem\"")), &[]);
    assert_eq!(status(&ok), (200, "tls-upstream".to_owned()));

    let wrong_ca = Gateway::start(
        &upstream_config(up.addr, &format!("sni = \"upstream.test\"\nca_file = \"{d}/other-ca.pem\"")),
        &[],
    );
    assert_eq!(status(&wrong_ca), (502, "upstream_unreachable".to_owned()), "an untrusted certificate is refused");
    let wrong_name =
        Gateway::start(&upstream_config(up.addr, &format!("sni = \"other.test\"\nca_file = \"{d}/ca.pem\"")), &[]);
    assert_eq!(
        status(&wrong_name),
        (502, "upstream_unreachable".to_owned()),
        "a certificate for another name is refused"
    );
    assert_eq!(up.served(), 1);

    // An expired certificate from a trusted CA, for the right name, is refused too.
    let expired = common::tls_upstream::TlsUpstream::start_with("expired", false);
    let gw = Gateway::start(
        &upstream_config(expired.addr, &format!("sni = \"upstream.test\"\nca_file = \"{d}/expired-ca.pem\"")),
        &[],
    );
    assert_eq!(status(&gw), (502, "upstream_unreachable".to_owned()), "an expired certificate is refused");
    assert_eq!(expired.served(), 0);
}

#[test]
fn mutual_tls_presents_the_pool_client_certificate() {
    let up = common::tls_upstream::TlsUpstream::start(true);
    let d = tls_dir();
    let without =
        Gateway::start(&upstream_config(up.addr, &format!("sni = \"upstream.test\"\nca_file = \"{d}/ca.pem\"")), &[]);
    assert_eq!(status(&without).0, 502, "the upstream requires a client certificate");
    let with = Gateway::start(
        &upstream_config(up.addr, &format!("sni = \"upstream.test\"\nca_file = \"{d}/ca.pem\"\nclient_cert_file = \"{d}/client.pem\"\nclient_key_file = \"{d}/client.key\"")),
        &[],
    );
    assert_eq!(status(&with), (200, "tls-upstream".to_owned()));
    assert_eq!(up.served(), 1);
}
