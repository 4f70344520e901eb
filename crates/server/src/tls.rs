//! HTTPS: the certificate chain and key from `WAITER_TLS_CERT` and
//! `WAITER_TLS_KEY`, served with rustls (ring) and HTTP/2 offered by ALPN
//! (actix adds `h2` and `http/1.1` itself).
//!
//! Every failure names the variable whose file is at fault, so that start-up
//! stops with one line saying what to fix.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, anyhow};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The TLS configuration for the certificate chain at `cert` and the key at `key`.
pub fn load(cert: &Path, key: &Path) -> anyhow::Result<ServerConfig> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|err| anyhow!("WAITER_TLS_CERT {}: {err}", cert.display()))?;
    if chain.is_empty() {
        return Err(anyhow!(
            "WAITER_TLS_CERT {}: holds no PEM certificate",
            cert.display()
        ));
    }
    let private_key = PrivateKeyDer::from_pem_file(key)
        .map_err(|err| anyhow!("WAITER_TLS_KEY {}: {err}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("the TLS provider supports no protocol version")?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|err| {
            anyhow!(
                "WAITER_TLS_KEY {} does not fit WAITER_TLS_CERT {}: {err}",
                key.display(),
                cert.display()
            )
        })
}
