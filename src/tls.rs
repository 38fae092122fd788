//! TLS termination: certificates loaded and checked at compile time, and a rustls
//! resolver that picks one by the client's SNI from the snapshot in force, so a
//! configuration reload also reloads certificates without dropping connections.
//!
//! Lookup order: the exact name, then a `*.parent` wildcard, then the first certificate
//! (for clients that send no or an unknown name).

use std::collections::HashMap;
use std::sync::Arc;

use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use toml::Spanned;

use crate::config::{file, ConfigError, Source};
use crate::snapshot::SnapshotCell;

/// Certificates by server name.
#[derive(Debug, Default)]
pub struct CertStore {
    by_name: HashMap<Box<str>, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl CertStore {
    /// The certificate for `server_name` (lowercase), or the default.
    pub fn resolve(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = server_name else { return self.default.clone() };
        let wildcard = name.split_once('.').map(|(_, parent)| format!("*.{parent}"));
        self.by_name
            .get(name)
            .or_else(|| wildcard.and_then(|w| self.by_name.get(w.as_str())))
            .or(self.default.as_ref())
            .cloned()
    }

    /// Whether any certificate is loaded.
    pub fn is_empty(&self) -> bool {
        self.default.is_none()
    }

    /// Loads every `[[certificates]]` entry.
    pub fn compile(raw: &[file::Certificate], source: &Source, errors: &mut Vec<ConfigError>) -> Self {
        let mut store = Self::default();
        for (i, c) in raw.iter().enumerate() {
            let key = format!("certificates[{i}]");
            let fields = PemPair::fields(&key, "cert_file", "key_file");
            let Some(certified) = fields.load(&c.cert_file, &c.key_file, source, errors) else { continue };
            let certified = Arc::new(certified);
            if c.server_names.is_empty() {
                errors.push(ConfigError::at(
                    c.cert_file.span(),
                    format!("{key}.server_names"),
                    "the certificate serves no name",
                    "list its names, e.g. [\"api.example.com\"]",
                ));
            }
            for name in &c.server_names {
                if store.by_name.insert(name.to_ascii_lowercase().into(), Arc::clone(&certified)).is_some() {
                    errors.push(ConfigError::at(
                        c.cert_file.span(),
                        format!("{key}.server_names"),
                        format!("`{name}` is served by two certificates"),
                        "list each name once",
                    ));
                }
            }
            store.default.get_or_insert(certified);
        }
        store
    }
}

/// The config keys of a certificate chain and its private key, which errors name.
#[derive(Debug)]
pub struct PemPair<'a> {
    section: &'a str,
    cert_field: &'static str,
    key_field: &'static str,
}

impl<'a> PemPair<'a> {
    /// The keys `section.cert_field` and `section.key_field`.
    pub fn fields(section: &'a str, cert_field: &'static str, key_field: &'static str) -> Self {
        Self { section, cert_field, key_field }
    }

    fn cert(&self) -> String {
        format!("{}.{}", self.section, self.cert_field)
    }

    fn key(&self) -> String {
        format!("{}.{}", self.section, self.key_field)
    }

    /// Loads the PEM chain at `cert_file` and the private key at `key_file` (relative to
    /// the config file) and checks that they belong together.
    pub fn load(
        &self,
        cert_file: &Spanned<String>,
        key_file: &Spanned<String>,
        source: &Source,
        errors: &mut Vec<ConfigError>,
    ) -> Option<CertifiedKey> {
        let cert_path = source.resolve(cert_file.get_ref());
        let key_path = source.resolve(key_file.get_ref());
        let certs = match read_certs(&cert_path) {
            Ok(certs) => certs,
            Err(e) => {
                errors.push(ConfigError::at(
                    cert_file.span(),
                    self.cert(),
                    format!("cannot use {}: {e}", cert_path.display()),
                    "point it at a PEM certificate chain (relative paths start at the config file's directory)",
                ));
                return None;
            }
        };
        let private = match PrivateKeyDer::from_pem_file(&key_path) {
            Ok(k) => k,
            Err(e) => {
                errors.push(ConfigError::at(
                    key_file.span(),
                    self.key(),
                    format!("cannot read a private key from {}: {e}", key_path.display()),
                    "point it at the PEM private key of the certificate",
                ));
                return None;
            }
        };
        let signing = any_supported_type(&private)
            .map_err(|e| {
                errors.push(ConfigError::at(
                    key_file.span(),
                    self.key(),
                    format!("unsupported private key: {e}"),
                    "use an RSA, ECDSA or Ed25519 key",
                ))
            })
            .ok()?;
        let certified = CertifiedKey::new(certs, signing);
        if certified.keys_match().is_err() {
            errors.push(ConfigError::at(
                key_file.span(),
                self.key(),
                format!("{} does not belong to {}", key_path.display(), cert_path.display()),
                "pair the certificate with its own private key",
            ));
            return None;
        }
        Some(certified)
    }

    /// Like `load`, for a pair of optional keys where both or neither must be set:
    /// `None` when neither is set, or on an error (pushed to `errors`).
    pub fn load_optional(
        &self,
        cert_file: Option<&Spanned<String>>,
        key_file: Option<&Spanned<String>>,
        source: &Source,
        errors: &mut Vec<ConfigError>,
    ) -> Option<CertifiedKey> {
        match (cert_file, key_file) {
            (None, None) => None,
            (Some(cert), Some(key)) => self.load(cert, key, source, errors),
            (Some(given), None) | (None, Some(given)) => {
                let (set, missing, key) = if cert_file.is_some() {
                    (self.cert_field, self.key_field, self.key())
                } else {
                    (self.key_field, self.cert_field, self.cert())
                };
                errors.push(ConfigError::at(
                    given.span(),
                    key,
                    format!("{set} is set without {missing}"),
                    "set both the certificate and its private key, or neither",
                ));
                None
            }
        }
    }
}

/// Chooses the certificate for each TLS handshake from the snapshot in force.
#[derive(Debug)]
pub struct SniResolver {
    snapshots: Arc<SnapshotCell>,
}

impl SniResolver {
    /// A resolver reading `snapshots`.
    pub fn new(snapshots: Arc<SnapshotCell>) -> Self {
        Self { snapshots }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name().map(str::to_ascii_lowercase);
        self.snapshots.load().certificates.resolve(name.as_deref())
    }
}

/// Reads PEM certificates, checking each parses as X.509.
pub(crate) fn read_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(path).and_then(Iterator::collect).map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no certificate in the file".to_owned());
    }
    let mut check = rustls::RootCertStore::empty();
    for c in &certs {
        check.add(c.clone()).map_err(|e| format!("not a usable certificate: {e}"))?;
    }
    Ok(certs)
}

/// Compiles a pool's TLS settings: SNI (required, so verification is never skipped),
/// optional CA file, optional client certificate for mutual TLS.
pub fn upstream(
    raw: &file::Pool,
    key: &str,
    source: &Source,
    errors: &mut Vec<ConfigError>,
) -> Option<crate::upstream::UpstreamTls> {
    use pingora::utils::tls::{parse_x509, CertKey, WrappedX509};
    let mentions_tls =
        raw.sni.is_some() || raw.ca_file.is_some() || raw.client_cert_file.is_some() || raw.client_key_file.is_some();
    if !raw.tls {
        if mentions_tls {
            errors.push(ConfigError::at(
                0..0,
                key,
                "TLS settings are given but tls is not enabled",
                "set tls = true, or remove sni/ca_file/client_cert_file/client_key_file",
            ));
        }
        return None;
    }
    let Some(sni) = raw.sni.as_ref().filter(|s| !s.get_ref().is_empty()) else {
        errors.push(ConfigError::at(
            0..0,
            format!("{key}.sni"),
            "a TLS pool needs the server name to verify (an empty SNI would skip certificate verification)",
            "set sni = \"app.internal\"",
        ));
        return None;
    };
    let ca = match &raw.ca_file {
        None => None,
        Some(ca) => match read_certs(&source.resolve(ca.get_ref())) {
            Ok(certs) => Some(Arc::from(
                certs
                    .into_iter()
                    .map(|c| WrappedX509::new(c.to_vec(), parse_x509))
                    .collect::<Vec<_>>()
                    .into_boxed_slice(),
            )),
            Err(e) => {
                errors.push(ConfigError::at(
                    ca.span(),
                    format!("{key}.ca_file"),
                    format!("cannot use {}: {e}", ca.get_ref()),
                    "point it at PEM CA certificate(s)",
                ));
                return None;
            }
        },
    };
    let client = match (&raw.client_cert_file, &raw.client_key_file) {
        (None, None) => None,
        (Some(cert), Some(private)) => {
            let certs = read_certs(&source.resolve(cert.get_ref()));
            let private = PrivateKeyDer::from_pem_file(source.resolve(private.get_ref())).map_err(|e| e.to_string());
            match (certs, private) {
                (Ok(certs), Ok(private)) => Some(Arc::new(CertKey::new(
                    certs.into_iter().map(|c| c.to_vec()).collect(),
                    private.secret_der().to_vec(),
                ))),
                (Err(e), _) | (_, Err(e)) => {
                    errors.push(ConfigError::at(
                        cert.span(),
                        format!("{key}.client_cert_file"),
                        format!("cannot load the client certificate: {e}"),
                        "point client_cert_file and client_key_file at a PEM certificate and its key",
                    ));
                    return None;
                }
            }
        }
        _ => {
            errors.push(ConfigError::at(
                0..0,
                key,
                "mutual TLS needs both client_cert_file and client_key_file",
                "set both, or neither",
            ));
            return None;
        }
    };
    Some(crate::upstream::UpstreamTls { sni: sni.get_ref().clone(), ca, client })
}
