//! An HTTPS upstream for the tests: rustls with a certificate from the test CA, answering
//! every request with 200 and a small JSON body; it can require client certificates.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn tls_file(name: &str) -> String {
    format!("{}/tests/fixtures/tls/{name}", env!("CARGO_MANIFEST_DIR"))
}

pub struct TlsUpstream {
    pub addr: SocketAddr,
    served: Arc<AtomicUsize>,
    _rt: tokio::runtime::Runtime,
}

impl TlsUpstream {
    /// Serves `upstream.test`'s certificate; with `require_client_cert`, only clients
    /// presenting a certificate from the test CA get through the handshake.
    pub fn start(require_client_cert: bool) -> Self {
        Self::start_with("upstream", require_client_cert)
    }

    /// Serves fixture certificate `cert` (`cert.pem` and `cert.key`).
    pub fn start_with(cert: &str, require_client_cert: bool) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(tls_file(&format!("{cert}.pem"))).unwrap().map(Result::unwrap).collect();
        let key = PrivateKeyDer::from_pem_file(tls_file(&format!("{cert}.key"))).unwrap();
        let builder = rustls::ServerConfig::builder();
        let config = if require_client_cert {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(tls_file("ca.pem")).unwrap() {
                roots.add(c.unwrap()).unwrap();
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots)).build().unwrap();
            builder.with_client_cert_verifier(verifier).with_single_cert(certs, key).unwrap()
        } else {
            builder.with_no_client_auth().with_single_cert(certs, key).unwrap()
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&served);
        rt.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, counter) = (acceptor.clone(), Arc::clone(&counter));
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let mut buf = vec![0u8; 16 * 1024];
                    let mut len = 0;
                    loop {
                        if let Some(end) = buf[..len].windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            len -= end + 4;
                            counter.fetch_add(1, Ordering::SeqCst);
                            let body = r#"{"upstream":"tls-upstream"}"#;
                            let resp = format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            if tls.write_all(resp.as_bytes()).await.is_err() {
                                return;
                            }
                            continue;
                        }
                        match tls.read(&mut buf[len..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => len += n,
                        }
                    }
                });
            }
        });
        Self { addr, served, _rt: rt }
    }

    pub fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }
}
