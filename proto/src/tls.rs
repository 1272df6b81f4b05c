//! TLS configuration from PEM files, checked when it is built so that a wrong path, an empty
//! file or a key that does not belong to its certificate is reported at start-up, naming the
//! file, instead of as an opaque handshake failure later.
//!
//! Two server shapes, one per kind of caller:
//! - [`mtls_server`]: the agent-facing `AgentService`. A client certificate signed by our CA is
//!   *required*: a connection without one, with one from another CA or with an expired one never
//!   completes the handshake. Handlers then read the backend with
//!   [`crate::identity::backend_from_request`].
//! - [`tls_server`]: the job-server-facing `RapService` and others authenticated by bearer
//!   tokens: TLS for confidentiality, no client certificate.
//!
//! And two client shapes: [`mtls_client`] (an agent: CA plus its own certificate and key) and
//! [`tls_client`] (CA only). Each has a `*_from_pem` twin taking PEM text, for tests and for
//! material that does not come from files, and a `rustls_*` builder for code that drives rustls
//! directly. Tonic services must use the tonic configs: only tonic's own TLS acceptor records
//! the peer's certificates on the request, which identity extraction needs.
//!
//! No native or webpki root store is ever trusted: only the CA file given (the installation's
//! private CA, minted by [`crate::certs`]).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use thiserror::Error;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// How long a server waits for a TLS handshake to complete, so that a client that connects and
/// stays silent cannot hold a connection slot.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The PEM files of one party, as they appear in a service's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA certificate(s) that peers must be signed by.
    pub ca: PathBuf,
    /// This party's certificate (optionally followed by its intermediates).
    pub cert: PathBuf,
    /// This party's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The same material as [`TlsFiles`], already in memory as PEM text.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsPem {
    /// The CA certificate(s) that peers must be signed by.
    pub ca: String,
    /// This party's certificate (optionally followed by its intermediates).
    pub cert: String,
    /// This party's private key.
    pub key: String,
}

/// Which of the three PEM inputs a [`TlsConfigError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PemRole {
    /// The CA certificate(s) to trust.
    CaCertificate,
    /// Our own certificate.
    Certificate,
    /// Our own private key.
    PrivateKey,
}

/// Where a PEM input came from, so that errors name the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PemOrigin {
    /// Read from this file.
    File(PathBuf),
    /// Given as text (the `*_from_pem` functions).
    Memory,
}

/// Why a TLS configuration could not be built.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// The file could not be read.
    #[error("cannot read the {role} file {}", path.display())]
    Read {
        /// Which input.
        role: PemRole,
        /// The file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: io::Error,
    },
    /// The input is not well-formed PEM.
    #[error("the {role} ({origin}) is not valid PEM")]
    InvalidPem {
        /// Which input.
        role: PemRole,
        /// Where it came from.
        origin: PemOrigin,
        /// The decoder's error.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The input holds no `CERTIFICATE` block.
    #[error("the {role} ({origin}) holds no certificate")]
    NoCertificate {
        /// Which input.
        role: PemRole,
        /// Where it came from.
        origin: PemOrigin,
    },
    /// The key input holds no private key block.
    #[error("the private key ({origin}) holds no private key")]
    NoPrivateKey {
        /// Where it came from.
        origin: PemOrigin,
    },
    /// A CA certificate was rejected as a trust anchor (e.g. it is not valid X.509).
    #[error("the CA certificate ({origin}) cannot be used as a trust anchor")]
    InvalidCa {
        /// Where it came from.
        origin: PemOrigin,
        /// rustls's reason.
        #[source]
        source: rustls::Error,
    },
    /// The client-certificate verifier could not be built from the CA certificates.
    #[error("the CA certificate ({origin}) cannot verify client certificates")]
    ClientVerifier {
        /// Where the CA came from.
        origin: PemOrigin,
        /// rustls's reason.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    /// The certificate and key were rejected together (most often: the key is not the
    /// certificate's).
    #[error("the certificate ({cert}) and private key ({key}) cannot be used together")]
    CertificateAndKey {
        /// Where the certificate came from.
        cert: PemOrigin,
        /// Where the key came from.
        key: PemOrigin,
        /// rustls's reason.
        #[source]
        source: rustls::Error,
    },
}

/// The tonic server config for the agent service: our certificate, and a client certificate
/// signed by `files.ca` required of every connection.
///
/// # Errors
/// [`TlsConfigError`] naming the file that is missing, malformed or inconsistent.
pub fn mtls_server(files: &TlsFiles) -> Result<ServerTlsConfig, TlsConfigError> {
    mtls_server_from_material(&Material::read(files)?)
}

/// [`mtls_server`] from PEM text.
///
/// # Errors
/// [`TlsConfigError`] when the PEM is malformed or inconsistent.
pub fn mtls_server_from_pem(pem: &TlsPem) -> Result<ServerTlsConfig, TlsConfigError> {
    mtls_server_from_material(&Material::from_pem(pem))
}

/// The tonic server config for token-authenticated services: our certificate, no client
/// certificate asked for.
///
/// # Errors
/// [`TlsConfigError`] naming the file that is missing, malformed or inconsistent.
pub fn tls_server(cert: &Path, key: &Path) -> Result<ServerTlsConfig, TlsConfigError> {
    let cert = Input::read(PemRole::Certificate, cert)?;
    let key = Input::read(PemRole::PrivateKey, key)?;
    tls_server_from_inputs(&cert, &key)
}

/// [`tls_server`] from PEM text.
///
/// # Errors
/// [`TlsConfigError`] when the PEM is malformed or inconsistent.
pub fn tls_server_from_pem(cert: &str, key: &str) -> Result<ServerTlsConfig, TlsConfigError> {
    let cert = Input::memory(PemRole::Certificate, cert);
    let key = Input::memory(PemRole::PrivateKey, key);
    tls_server_from_inputs(&cert, &key)
}

/// The tonic client config of an agent: trust `files.ca`, present `files.cert`.
///
/// The server's name is checked against the endpoint's host (a DNS name or an IP address in
/// the server certificate); call `.domain_name(..)` on the result to check another name.
///
/// # Errors
/// [`TlsConfigError`] naming the file that is missing, malformed or inconsistent.
pub fn mtls_client(files: &TlsFiles) -> Result<ClientTlsConfig, TlsConfigError> {
    mtls_client_from_material(&Material::read(files)?)
}

/// [`mtls_client`] from PEM text.
///
/// # Errors
/// [`TlsConfigError`] when the PEM is malformed or inconsistent.
pub fn mtls_client_from_pem(pem: &TlsPem) -> Result<ClientTlsConfig, TlsConfigError> {
    mtls_client_from_material(&Material::from_pem(pem))
}

/// The tonic client config of a token-authenticated client: trust `ca`, present no certificate.
///
/// # Errors
/// [`TlsConfigError`] naming the file when it is missing or holds no usable certificate.
pub fn tls_client(ca: &Path) -> Result<ClientTlsConfig, TlsConfigError> {
    tls_client_from_input(&Input::read(PemRole::CaCertificate, ca)?)
}

/// [`tls_client`] from PEM text.
///
/// # Errors
/// [`TlsConfigError`] when the PEM holds no usable certificate.
pub fn tls_client_from_pem(ca: &str) -> Result<ClientTlsConfig, TlsConfigError> {
    tls_client_from_input(&Input::memory(PemRole::CaCertificate, ca))
}

/// A rustls server config requiring client certificates signed by the CA, with ALPN `h2`.
///
/// # Errors
/// [`TlsConfigError`] when the PEM is malformed or inconsistent.
pub fn rustls_mtls_server_config(pem: &TlsPem) -> Result<rustls::ServerConfig, TlsConfigError> {
    build_mtls_server(&Material::from_pem(pem))
}

/// A rustls server config without client authentication, with ALPN `h2`.
///
/// # Errors
/// [`TlsConfigError`] when the PEM is malformed or inconsistent.
pub fn rustls_tls_server_config(
    cert: &str,
    key: &str,
) -> Result<rustls::ServerConfig, TlsConfigError> {
    let cert = Input::memory(PemRole::Certificate, cert);
    let key = Input::memory(PemRole::PrivateKey, key);
    build_tls_server(&cert, &key)
}

/// A rustls client config trusting the CA and presenting the certificate, with ALPN `h2`.
///
/// # Errors
/// [`TlsConfigError`] when the PEM is malformed or inconsistent.
pub fn rustls_mtls_client_config(pem: &TlsPem) -> Result<rustls::ClientConfig, TlsConfigError> {
    build_mtls_client(&Material::from_pem(pem))
}

/// A rustls client config trusting the CA, without a client certificate, with ALPN `h2`.
///
/// # Errors
/// [`TlsConfigError`] when the PEM holds no usable certificate.
pub fn rustls_tls_client_config(ca: &str) -> Result<rustls::ClientConfig, TlsConfigError> {
    build_tls_client(&Input::memory(PemRole::CaCertificate, ca))
}

impl fmt::Display for PemRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PemRole::CaCertificate => "CA certificate",
            PemRole::Certificate => "certificate",
            PemRole::PrivateKey => "private key",
        })
    }
}

impl fmt::Display for PemOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PemOrigin::File(path) => write!(f, "file {}", path.display()),
            PemOrigin::Memory => f.write_str("PEM given in memory"),
        }
    }
}

// Deliberately not derived: the private key must not end up in a log line.
impl fmt::Debug for TlsPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsPem")
            .field("ca", &self.ca)
            .field("cert", &self.cert)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// One PEM input with where it came from.
struct Input {
    role: PemRole,
    origin: PemOrigin,
    pem: Vec<u8>,
}

/// The three inputs of a mutual-TLS party.
struct Material {
    ca: Input,
    cert: Input,
    key: Input,
}

impl Input {
    fn read(role: PemRole, path: &Path) -> Result<Input, TlsConfigError> {
        match std::fs::read(path) {
            Ok(pem) => Ok(Input {
                role,
                origin: PemOrigin::File(path.to_owned()),
                pem,
            }),
            Err(source) => Err(TlsConfigError::Read {
                role,
                path: path.to_owned(),
                source,
            }),
        }
    }

    fn memory(role: PemRole, pem: &str) -> Input {
        Input {
            role,
            origin: PemOrigin::Memory,
            pem: pem.as_bytes().to_vec(),
        }
    }

    fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
        let certificates = CertificateDer::pem_slice_iter(&self.pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| TlsConfigError::InvalidPem {
                role: self.role,
                origin: self.origin.clone(),
                source,
            })?;
        if certificates.is_empty() {
            return Err(TlsConfigError::NoCertificate {
                role: self.role,
                origin: self.origin.clone(),
            });
        }
        Ok(certificates)
    }

    fn private_key(&self) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
        match PrivateKeyDer::from_pem_slice(&self.pem) {
            Ok(key) => Ok(key),
            Err(rustls::pki_types::pem::Error::NoItemsFound) => Err(TlsConfigError::NoPrivateKey {
                origin: self.origin.clone(),
            }),
            Err(source) => Err(TlsConfigError::InvalidPem {
                role: self.role,
                origin: self.origin.clone(),
                source,
            }),
        }
    }

    fn roots(&self) -> Result<RootCertStore, TlsConfigError> {
        let mut roots = RootCertStore::empty();
        for certificate in self.certificates()? {
            roots
                .add(certificate)
                .map_err(|source| TlsConfigError::InvalidCa {
                    origin: self.origin.clone(),
                    source,
                })?;
        }
        Ok(roots)
    }
}

impl Material {
    fn read(files: &TlsFiles) -> Result<Material, TlsConfigError> {
        Ok(Material {
            ca: Input::read(PemRole::CaCertificate, &files.ca)?,
            cert: Input::read(PemRole::Certificate, &files.cert)?,
            key: Input::read(PemRole::PrivateKey, &files.key)?,
        })
    }

    fn from_pem(pem: &TlsPem) -> Material {
        Material {
            ca: Input::memory(PemRole::CaCertificate, &pem.ca),
            cert: Input::memory(PemRole::Certificate, &pem.cert),
            key: Input::memory(PemRole::PrivateKey, &pem.key),
        }
    }
}

fn mtls_server_from_material(material: &Material) -> Result<ServerTlsConfig, TlsConfigError> {
    // Building the rustls config is the check; tonic builds its own from the same PEM, with
    // client authentication required unless told otherwise (`client_auth_optional` false).
    build_mtls_server(material)?;
    Ok(ServerTlsConfig::new()
        .identity(Identity::from_pem(&material.cert.pem, &material.key.pem))
        .client_ca_root(Certificate::from_pem(&material.ca.pem))
        .client_auth_optional(false)
        .timeout(HANDSHAKE_TIMEOUT))
}

fn tls_server_from_inputs(cert: &Input, key: &Input) -> Result<ServerTlsConfig, TlsConfigError> {
    build_tls_server(cert, key)?;
    Ok(ServerTlsConfig::new()
        .identity(Identity::from_pem(&cert.pem, &key.pem))
        .timeout(HANDSHAKE_TIMEOUT))
}

fn mtls_client_from_material(material: &Material) -> Result<ClientTlsConfig, TlsConfigError> {
    build_mtls_client(material)?;
    Ok(ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&material.ca.pem))
        .identity(Identity::from_pem(&material.cert.pem, &material.key.pem)))
}

fn tls_client_from_input(ca: &Input) -> Result<ClientTlsConfig, TlsConfigError> {
    build_tls_client(ca)?;
    Ok(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca.pem)))
}

/// The one crypto provider of the workspace (ring), named explicitly so that no process-wide
/// default has to be installed first.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn build_mtls_server(material: &Material) -> Result<rustls::ServerConfig, TlsConfigError> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(material.ca.roots()?),
        provider.clone(),
    )
    .build()
    .map_err(|source| TlsConfigError::ClientVerifier {
        origin: material.ca.origin.clone(),
        source,
    })?;
    let builder = server_builder(provider, &material.cert)?.with_client_cert_verifier(verifier);
    let mut config = builder
        .with_single_cert(material.cert.certificates()?, material.key.private_key()?)
        .map_err(|source| certificate_and_key(&material.cert, &material.key, source))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

fn build_tls_server(cert: &Input, key: &Input) -> Result<rustls::ServerConfig, TlsConfigError> {
    let builder = server_builder(provider(), cert)?.with_no_client_auth();
    let mut config = builder
        .with_single_cert(cert.certificates()?, key.private_key()?)
        .map_err(|source| certificate_and_key(cert, key, source))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

fn build_mtls_client(material: &Material) -> Result<rustls::ClientConfig, TlsConfigError> {
    let builder = client_builder(&material.cert)?.with_root_certificates(material.ca.roots()?);
    let mut config = builder
        .with_client_auth_cert(material.cert.certificates()?, material.key.private_key()?)
        .map_err(|source| certificate_and_key(&material.cert, &material.key, source))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

fn build_tls_client(ca: &Input) -> Result<rustls::ClientConfig, TlsConfigError> {
    let mut config = client_builder(ca)?
        .with_root_certificates(ca.roots()?)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

fn server_builder(
    provider: Arc<CryptoProvider>,
    blame: &Input,
) -> Result<rustls::ConfigBuilder<rustls::ServerConfig, rustls::WantsVerifier>, TlsConfigError> {
    // Only fails when the provider supports none of the default protocol versions, which ring's
    // default provider always does; reported against our certificate rather than unwrapped.
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| certificate_and_key(blame, blame, source))
}

fn client_builder(
    blame: &Input,
) -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>, TlsConfigError> {
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| certificate_and_key(blame, blame, source))
}

fn certificate_and_key(cert: &Input, key: &Input, source: rustls::Error) -> TlsConfigError {
    TlsConfigError::CertificateAndKey {
        cert: cert.origin.clone(),
        key: key.origin.clone(),
        source,
    }
}
