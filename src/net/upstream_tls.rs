//! TLS toward the upstream server, as libpq's sslmode: PostgreSQL starts plain, so the client
//! sends SSLRequest and upgrades only after the server's 'S'. Managed PostgreSQL services ask for
//! require or verify-full; a local sidecar upstream usually answers 'N', and prefer then stays
//! plain at no cost.
//!
//! Built once per distinct (mode, files) and kept: a pooled connect must not read PEM files. A
//! RELOAD with other files or another mode builds anew; the same paths with rotated contents need
//! a restart (the configuration names files, not their contents).

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use parking_lot::Mutex;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use crate::config::{SslMode, UpstreamConfig};

/// What a server connection needs to negotiate TLS.
pub struct UpstreamTls {
    pub mode: SslMode,
    pub connector: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UpstreamTls({:?})", self.mode)
    }
}

impl UpstreamTls {
    /// Whether a server that answers 'N' must be refused.
    pub fn required(&self) -> bool {
        !matches!(self.mode, SslMode::Prefer)
    }
}

type Key = (SslMode, Option<std::path::PathBuf>, Option<std::path::PathBuf>, Option<std::path::PathBuf>);
static BUILT: Mutex<Option<(Key, Option<Arc<UpstreamTls>>)>> = Mutex::new(None);

/// The TLS settings of `cfg` (None for sslmode = disable), built on first use and kept.
pub fn for_config(cfg: &UpstreamConfig) -> Result<Option<Arc<UpstreamTls>>> {
    // libpq's rule: no TLS on a Unix-domain socket, so its settings are not even checked there.
    if crate::config::load::parse_upstream(&cfg.url).is_ok_and(|u| u.host.starts_with('/')) {
        return Ok(None);
    }
    let key: Key = (cfg.sslmode, cfg.sslrootcert.clone(), cfg.sslcert.clone(), cfg.sslkey.clone());
    let mut built = BUILT.lock();
    if let Some((k, tls)) = built.as_ref() {
        if *k == key {
            return Ok(tls.clone());
        }
    }
    let tls = build(cfg)?.map(Arc::new);
    *built = Some((key, tls.clone()));
    Ok(tls)
}

fn build(cfg: &UpstreamConfig) -> Result<Option<UpstreamTls>> {
    if cfg.sslmode == SslMode::Disable {
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = match cfg.sslmode {
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let Some(path) = &cfg.sslrootcert else {
                bail!("upstream.sslmode = {:?} needs upstream.sslrootcert (the CA certificates, PEM)", cfg.sslmode);
            };
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(path)? {
                roots.add(cert).with_context(|| format!("upstream.sslrootcert {}", path.display()))?;
            }
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .context("upstream.sslrootcert")?;
            Some(webpki)
        }
        _ => None,
    };
    let name_checked = cfg.sslmode == SslMode::VerifyFull;
    let verifier = Arc::new(Check { provider: provider.clone(), chain, name_checked });
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match (&cfg.sslcert, &cfg.sslkey) {
        (Some(cert), Some(key)) => {
            let certs = read_certs(cert)?;
            let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
                std::fs::File::open(key).with_context(|| format!("upstream.sslkey {}", key.display()))?,
            ))
            .with_context(|| format!("upstream.sslkey {}", key.display()))?
            .with_context(|| format!("upstream.sslkey {}: no private key in it", key.display()))?;
            builder.with_client_auth_cert(certs, key).context("upstream.sslcert / sslkey")?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => bail!("upstream.sslcert and upstream.sslkey must be set together"),
    };
    Ok(Some(UpstreamTls { mode: cfg.sslmode, connector: tokio_rustls::TlsConnector::from(Arc::new(config)) }))
}

fn read_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>> {
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: not PEM certificates", path.display()))?;
    if certs.is_empty() {
        bail!("{}: no certificate in it", path.display());
    }
    Ok(certs)
}

/// The name `ServerName` of the upstream host (a DNS name or an IP address).
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_string()).map_err(|e| format!("{host:?} is not a host name TLS can check: {e}"))
}

/// The server-certificate check of each mode. prefer / require: none (encrypted, unauthenticated,
/// as libpq without a root certificate); verify-ca: the chain must lead to a configured CA, the
/// name is not checked; verify-full: webpki's own check, name included. Handshake signatures are
/// checked in every mode, so the peer holds the key of the certificate it sent.
#[derive(Debug)]
struct Check {
    provider: Arc<rustls::crypto::CryptoProvider>,
    /// None: prefer / require.
    chain: Option<Arc<WebPkiServerVerifier>>,
    name_checked: bool,
}

impl ServerCertVerifier for Check {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else { return Ok(ServerCertVerified::assertion()) };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.name_checked => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// libpq ignores the TLS settings on a Unix-domain socket: verify-full without its CA
    /// certificates is an error over TCP only.
    #[test]
    fn tls_settings_are_not_checked_for_a_socket() {
        let mut cfg = UpstreamConfig { sslmode: SslMode::VerifyFull, ..Default::default() };
        cfg.url = "postgres://app@%2Fvar%2Frun%2Fpostgresql:5432".into();
        assert!(for_config(&cfg).unwrap().is_none());
        cfg.url = "postgres://app@127.0.0.1:5432".into();
        assert!(for_config(&cfg).is_err(), "verify-full needs sslrootcert");
    }
}
