//! TLS termination: certificate/key pairs loaded from PEM, one chosen per connection by SNI
//! (exact names, then wildcards, then the first pair), ALPN offering h2 and http/1.1.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::client::load_pem_certs;

/// ALPN protocols a TLS listener offers, most preferred first.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Picks a certificate by the name the client asked for.
#[derive(Debug)]
pub struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    /// The certificate for a requested server name (or the default one).
    pub fn pick(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = server_name else {
            return self.default.clone();
        };
        let name = name.to_ascii_lowercase();
        if let Some(k) = self.exact.get(&name) {
            return k.clone();
        }
        name.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .unwrap_or(&self.default)
            .clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(hello.server_name()))
    }
}

/// Loads `(cert, key)` PEM pairs into a server configuration; errors name the file.
pub fn server_config(pairs: &[(PathBuf, PathBuf)]) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver = resolver(pairs, &provider)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

fn resolver(
    pairs: &[(PathBuf, PathBuf)],
    provider: &rustls::crypto::CryptoProvider,
) -> Result<SniResolver, String> {
    let mut exact = HashMap::new();
    let mut wildcard = HashMap::new();
    let mut default = None;
    for (cert_path, key_path) in pairs {
        let certs = load_pem_certs(cert_path)?;
        let key = load_key(key_path)?;
        let ck = CertifiedKey::from_der(certs, key, provider)
            .map_err(|e| format!("{} and {}: {e}", cert_path.display(), key_path.display()))?;
        let ck = Arc::new(ck);
        for name in dns_names(ck.end_entity_cert().map_or(&[][..], |c| c.as_ref())) {
            match name.strip_prefix("*.") {
                Some(parent) => wildcard
                    .entry(parent.to_string())
                    .or_insert_with(|| ck.clone()),
                None => exact.entry(name).or_insert_with(|| ck.clone()),
            };
        }
        default.get_or_insert(ck);
    }
    let default = default.ok_or("no TLS certificate given")?;
    Ok(SniResolver {
        exact,
        wildcard,
        default,
    })
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("{}: no usable private key ({e})", path.display()))
}

/// The DNS names a certificate is for (subjectAltName), lower-cased.
fn dns_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, tag: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let c = rcgen::generate_simple_self_signed(names).unwrap();
        let (cp, kp) = (
            dir.join(format!("{tag}.crt")),
            dir.join(format!("{tag}.key")),
        );
        std::fs::write(&cp, c.cert.pem()).unwrap();
        std::fs::write(&kp, c.signing_key.serialize_pem()).unwrap();
        (cp, kp)
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_default() {
        let dir = std::env::temp_dir().join(format!("lbx-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = pair(&dir, "a", &["a.test"]);
        let b = pair(&dir, "b", &["*.b.test", "b.test"]);
        let provider = rustls::crypto::ring::default_provider();
        let r = resolver(&[a, b], &provider).unwrap();
        let first =
            |k: Arc<CertifiedKey>| dns_names(k.end_entity_cert().unwrap().as_ref())[0].clone();
        assert_eq!(first(r.pick(Some("A.test"))), "a.test");
        assert_eq!(first(r.pick(Some("x.b.test"))), "*.b.test");
        assert_eq!(first(r.pick(Some("b.test"))), "*.b.test");
        assert_eq!(first(r.pick(Some("other.test"))), "a.test");
        assert_eq!(first(r.pick(None)), "a.test");
        assert!(server_config(&[]).is_err());
        let bad = server_config(&[(dir.join("missing.crt"), dir.join("missing.key"))]).unwrap_err();
        assert!(bad.contains("missing.crt"), "{bad}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
