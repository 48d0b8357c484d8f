//! Certificates of TLS inside frames: the node's configuration built from PEM, the clock rustls
//! reads (fed by the caller), the server-certificate check (chain only: the identity is the
//! atbus URI SAN, not a DNS name) and the `atbus://<namespace>/<name>` identity.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::time_provider::TimeProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use thiserror::Error;

/// URI scheme of certificate identities.
pub const IDENTITY_SCHEME: &str = "atbus://";
/// ALPN protocol both sides offer (RFC 7301); the QUIC-style API of rustls wants one.
pub const ALPN: &[u8] = b"atbus/1";
/// Server name the client hands rustls. SNI is off, so it never goes on the wire, and the
/// server's certificate is checked against the atbus identity, not against this name.
const PLACEHOLDER_SERVER_NAME: &str = "atbus.invalid";

/// Why a TLS configuration could not be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// The PEM text holds no certificate (cert chain or CA bundle).
    #[error("{what}: no certificate found in the PEM text")]
    NoCertificate {
        /// Which input ("certificate chain" or "CA").
        what: &'static str,
    },
    /// The PEM text could not be read.
    #[error("{what}: bad PEM: {reason}")]
    BadPem {
        /// Which input.
        what: &'static str,
        /// What the PEM reader said.
        reason: String,
    },
    /// A CA certificate was refused as a trust anchor.
    #[error("CA certificate refused: {0}")]
    BadCa(String),
    /// A certificate was given without its key, or a key without a certificate.
    #[error("a certificate chain needs its private key and the other way round")]
    CertificateWithoutKey,
    /// rustls refused the certificate and key (a key that does not match, an unsupported key).
    #[error("certificate and key refused: {0}")]
    Refused(String),
}

/// The caller-fed Unix clock rustls reads while it checks certificate validity periods.
///
/// Layers 0–3 take time as input: the handshake sets this clock from the `unix_ms` argument of
/// each call before rustls runs, so a test can put the clock after a certificate's expiry.
/// Unset (or before 1970), it reports no time and every certificate check fails.
#[derive(Debug, Default)]
pub struct TlsClock(AtomicI64);

impl TlsClock {
    /// Sets the Unix time in milliseconds.
    pub fn set_unix_ms(&self, unix_ms: i64) {
        self.0.store(unix_ms, Ordering::Relaxed);
    }
}

impl TimeProvider for TlsClock {
    fn current_time(&self) -> Option<UnixTime> {
        let ms = self.0.load(Ordering::Relaxed);
        let ms = u64::try_from(ms).ok().filter(|&ms| ms > 0)?;
        Some(UnixTime::since_unix_epoch(Duration::from_millis(ms)))
    }
}

/// An atbus identity from a certificate's URI SAN `atbus://<namespace>/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AtbusIdentity {
    /// Namespace (may be empty: `atbus:///<name>`).
    pub namespace: String,
    /// Node name (not empty, no `/`).
    pub name: String,
}

impl AtbusIdentity {
    /// The identity `namespace`/`name`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// Parses `atbus://<namespace>/<name>`; `None` for any other URI.
    pub fn from_uri(uri: &str) -> Option<Self> {
        let rest = uri.strip_prefix(IDENTITY_SCHEME)?;
        let (namespace, name) = rest.split_once('/')?;
        if name.is_empty() || name.contains('/') || namespace.contains(['?', '#', '@']) {
            return None;
        }
        if name.contains(['?', '#']) {
            return None;
        }
        Some(Self::new(namespace, name))
    }

    /// The URI form, as it goes into a certificate.
    pub fn to_uri(&self) -> String {
        format!("{IDENTITY_SCHEME}{}/{}", self.namespace, self.name)
    }
}

impl std::fmt::Display for AtbusIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_uri())
    }
}

/// Every atbus identity in the URI SANs of a DER certificate (empty when it has none or does
/// not parse).
pub fn certificate_identities(der: &[u8]) -> Vec<AtbusIdentity> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) => AtbusIdentity::from_uri(uri),
            _ => None,
        })
        .collect()
}

/// TLS settings of a node, from PEM text: its certificate chain and key (optional for a node
/// that only connects to servers not requiring client certificates), the CA bundle peers'
/// certificates must chain to, and whether a server requires client certificates (mutual TLS).
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub(crate) client: Arc<ClientConfig>,
    pub(crate) server: Option<Arc<ServerConfig>>,
    pub(crate) clock: Arc<TlsClock>,
    require_client_cert: bool,
    identities: Vec<AtbusIdentity>,
}

fn read_certs(
    pem: &[u8],
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsConfigError::BadPem {
            what,
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsConfigError::NoCertificate { what });
    }
    Ok(certs)
}

/// ring's provider with randomness and key exchange fed by each handshake's seed
/// (`random.rs`).
fn ring_provider() -> Arc<CryptoProvider> {
    Arc::new(super::random::fed_provider())
}

impl TlsConfig {
    /// Builds the configuration. `cert_pem` (leaf first, then intermediates) and `key_pem` go
    /// together; `ca_pem` holds one or more trust anchors. With `require_client_cert`, this
    /// node's server side refuses clients without a certificate.
    pub fn from_pem(
        cert_pem: Option<&[u8]>,
        key_pem: Option<&[u8]>,
        ca_pem: &[u8],
        require_client_cert: bool,
    ) -> Result<Self, TlsConfigError> {
        let provider = ring_provider();
        let clock = Arc::new(TlsClock::default());
        let mut roots = RootCertStore::empty();
        for ca in read_certs(ca_pem, "CA")? {
            roots
                .add(ca)
                .map_err(|e| TlsConfigError::BadCa(e.to_string()))?;
        }
        let roots = Arc::new(roots);
        let mut identities = Vec::new();
        let identity = match (cert_pem, key_pem) {
            (Some(cert), Some(key)) => {
                let chain = read_certs(cert, "certificate chain")?;
                identities = certificate_identities(chain[0].as_ref());
                let key =
                    PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsConfigError::BadPem {
                        what: "private key",
                        reason: e.to_string(),
                    })?;
                Some((chain, key))
            }
            (None, None) => None,
            _ => return Err(TlsConfigError::CertificateWithoutKey),
        };
        let refused = |e: rustls::Error| TlsConfigError::Refused(e.to_string());

        let verifier = Arc::new(AtbusServerVerifier {
            roots: roots.clone(),
            algorithms: provider.signature_verification_algorithms,
        });
        let builder = ClientConfig::builder_with_details(provider.clone(), clock.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(refused)?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut client = match &identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(refused)?,
            None => builder.with_no_client_auth(),
        };
        client.enable_sni = false;
        client.alpn_protocols = vec![ALPN.to_vec()];
        client.resumption = rustls::client::Resumption::disabled();

        let server = match identity {
            Some((chain, key)) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
                let verifier = if require_client_cert {
                    verifier
                } else {
                    verifier.allow_unauthenticated()
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| TlsConfigError::BadCa(e.to_string()))?;
                let mut server = ServerConfig::builder_with_details(provider, clock.clone())
                    .with_protocol_versions(&[&rustls::version::TLS13])
                    .map_err(refused)?
                    .with_client_cert_verifier(verifier)
                    .with_single_cert(chain, key)
                    .map_err(refused)?;
                server.alpn_protocols = vec![ALPN.to_vec()];
                server.send_tls13_tickets = 0;
                server.max_early_data_size = 0;
                Some(Arc::new(server))
            }
            None => None,
        };
        Ok(Self {
            client: Arc::new(client),
            server,
            clock,
            require_client_cert,
            identities,
        })
    }

    /// The atbus identities of this node's own certificate (empty without one). A node should
    /// refuse to start with a certificate that does not name it: peers would refuse it.
    pub fn identities(&self) -> &[AtbusIdentity] {
        &self.identities
    }

    /// Whether this node can accept TLS handshakes (it has a certificate).
    pub fn can_serve(&self) -> bool {
        self.server.is_some()
    }

    /// Whether this node's server side requires client certificates.
    pub fn requires_client_cert(&self) -> bool {
        self.require_client_cert
    }

    pub(crate) fn server_name() -> ServerName<'static> {
        ServerName::DnsName(
            rustls::pki_types::DnsName::try_from(PLACEHOLDER_SERVER_NAME)
                .expect("constant DNS name is valid")
                .to_owned(),
        )
    }
}

/// Checks a server's certificate chain against the configured CAs and its validity period at
/// the caller's clock, but not a DNS name: atbus servers are identified by the
/// `atbus://<namespace>/<name>` URI SAN, which the handshake compares with the claimed name.
#[derive(Debug)]
struct AtbusServerVerifier {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AtbusServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Only TLS 1.3 is offered, so a TLS 1.2 signature is never legitimate.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_uri_forms() {
        let id = AtbusIdentity::from_uri("atbus://game/lobby-1").expect("valid");
        assert_eq!(id, AtbusIdentity::new("game", "lobby-1"));
        assert_eq!(id.to_uri(), "atbus://game/lobby-1");
        assert_eq!(
            AtbusIdentity::from_uri("atbus:///solo"),
            Some(AtbusIdentity::new("", "solo"))
        );
        for bad in [
            "atbus://game",
            "atbus://game/",
            "atbus://game/a/b",
            "https://game/a",
            "atbus://u@game/a",
            "atbus://game/a?x",
            "",
        ] {
            assert_eq!(AtbusIdentity::from_uri(bad), None, "{bad}");
        }
    }

    #[test]
    fn clock_reports_only_positive_times() {
        let clock = TlsClock::default();
        assert!(clock.current_time().is_none());
        clock.set_unix_ms(-5);
        assert!(clock.current_time().is_none());
        clock.set_unix_ms(1_800_000_000_123);
        assert_eq!(
            clock.current_time().map(|t| t.as_secs()),
            Some(1_800_000_000)
        );
    }

    #[test]
    fn bad_pem_is_refused() {
        assert!(matches!(
            TlsConfig::from_pem(None, None, b"not pem", false),
            Err(TlsConfigError::NoCertificate { what: "CA" })
        ));
    }
}
