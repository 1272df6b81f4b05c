//! Minting the private PKI of an installation with rcgen: a CA, the controller's server
//! certificate, agent certificates naming their backend, and generic client certificates.
//! Used by `rap-controller certs …` and by the tests of every crate (which mint real
//! certificates instead of mocking TLS).
//!
//! What each certificate carries (the identity convention is in [`crate::identity`]):
//!
//! | kind | subject CN | subject-alternative names | extended key usage |
//! |---|---|---|---|
//! | CA | the given name | none | none (a CA, path length 0) |
//! | server | first hostname | the hostnames, `localhost`, `127.0.0.1` | server auth |
//! | agent | the backend | `rap://backend/<backend>` | client auth |
//! | client | the name | `rap://client/<name>` | client auth |
//!
//! Keys are ECDSA P-256. By default the CA is valid for ten years and a leaf for two, both
//! starting an hour ago to tolerate clock skew between hosts; [`Validity`] overrides that (tests
//! mint expired certificates this way). Private keys are written with mode 0600 and never over
//! an existing file.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::ServerName;
use thiserror::Error;

use crate::identity::{BackendName, CLIENT_URI_PREFIX};

/// How long a CA is valid by default.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// How long a server, agent or client certificate is valid by default.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(2 * 365 * 24 * 60 * 60);

/// How far in the past a default validity period starts, to tolerate clock skew.
const BACKDATE: Duration = Duration::from_secs(60 * 60);

/// A certificate authority that can issue certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: CertifiedPem,
}

/// A certificate and its private key, as PEM text.
#[derive(Clone, PartialEq, Eq)]
pub struct CertifiedPem {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

/// The files [`CertifiedPem::write_pem`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemPaths {
    /// `<dir>/<stem>.crt`.
    pub cert: PathBuf,
    /// `<dir>/<stem>.key`, mode 0600.
    pub key: PathBuf,
}

/// When a certificate is valid. Any pair is accepted, so tests can mint certificates that are
/// expired (`not_after` in the past) or not yet valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// The first moment the certificate is valid.
    pub not_before: SystemTime,
    /// The last moment the certificate is valid.
    pub not_after: SystemTime,
}

/// What kind of certificate to issue, with the names it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leaf {
    /// A TLS server certificate for these DNS names or IP addresses (plus `localhost` and
    /// `127.0.0.1`).
    Server {
        /// The names clients dial.
        hostnames: Vec<String>,
    },
    /// An agent's client certificate naming its backend.
    Agent {
        /// The backend the agent runs tasks for.
        backend: BackendName,
    },
    /// A generic client certificate naming no backend.
    Client {
        /// A name of `[A-Za-z0-9._-]`, shown in the certificate.
        name: String,
    },
}

/// Why a certificate could not be minted, loaded or written.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CertsError {
    /// Generating a key pair failed.
    #[error("cannot generate a key pair")]
    KeyGeneration(#[source] rcgen::Error),
    /// rcgen refused to build or sign the certificate.
    #[error("cannot sign the certificate for {subject}")]
    Sign {
        /// The certificate's common name.
        subject: String,
        /// rcgen's reason.
        #[source]
        source: rcgen::Error,
    },
    /// A server hostname is neither an IP address nor a valid DNS name.
    #[error("invalid hostname {hostname:?}")]
    InvalidHostname {
        /// The hostname as given.
        hostname: String,
        /// Why it is not a DNS name.
        #[source]
        source: rustls::pki_types::InvalidDnsNameError,
    },
    /// A name is empty or has characters outside `[A-Za-z0-9._-]`.
    #[error("invalid certificate name {name:?}: use letters, digits, '.', '_' and '-'")]
    InvalidName {
        /// The name as given.
        name: String,
    },
    /// A validity bound is before 1970, which certificates cannot express here.
    #[error("a validity period cannot start or end before 1970")]
    BeforeEpoch,
    /// The CA certificate or key given to [`Ca::from_pem`] cannot be used.
    #[error("cannot use the CA's {what}")]
    InvalidCa {
        /// `"certificate"` or `"private key"`.
        what: &'static str,
        /// rcgen's reason.
        #[source]
        source: rcgen::Error,
    },
    /// A file to write already exists.
    #[error("{} already exists; not overwriting it", path.display())]
    AlreadyExists {
        /// The file.
        path: PathBuf,
    },
    /// Reading or writing a file failed.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// `"read"` or `"write"`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: io::Error,
    },
}

impl Ca {
    /// A new self-signed CA named `name`, valid for [`CA_VALIDITY`] from now.
    ///
    /// # Errors
    /// [`CertsError`] when key generation or signing fails.
    pub fn new(name: &str) -> Result<Ca, CertsError> {
        Ca::with_validity(name, Validity::from_now(CA_VALIDITY))
    }

    /// A new self-signed CA with the given validity period.
    ///
    /// # Errors
    /// [`CertsError`] when key generation or signing fails.
    pub fn with_validity(name: &str, validity: Validity) -> Result<Ca, CertsError> {
        let key = KeyPair::generate().map_err(CertsError::KeyGeneration)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity.apply(&mut params)?;
        let cert = params
            .self_signed(&key)
            .map_err(|source| CertsError::Sign {
                subject: name.to_owned(),
                source,
            })?;
        let pem = CertifiedPem {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        Ok(Ca {
            issuer: Issuer::new(params, key),
            pem,
        })
    }

    /// An existing CA from its certificate and private key (e.g. files written earlier by
    /// [`CertifiedPem::write_pem`]), to issue more certificates.
    ///
    /// # Errors
    /// [`CertsError::InvalidCa`] when either cannot be parsed.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, CertsError> {
        let key = KeyPair::from_pem(key_pem).map_err(|source| CertsError::InvalidCa {
            what: "private key",
            source,
        })?;
        let issuer =
            Issuer::from_ca_cert_pem(cert_pem, key).map_err(|source| CertsError::InvalidCa {
                what: "certificate",
                source,
            })?;
        Ok(Ca {
            issuer,
            pem: CertifiedPem {
                cert_pem: cert_pem.to_owned(),
                key_pem: key_pem.to_owned(),
            },
        })
    }

    /// An existing CA from `<dir>/<stem>.crt` and `<dir>/<stem>.key`.
    ///
    /// # Errors
    /// [`CertsError`] when a file cannot be read or parsed.
    pub fn load(dir: &Path, stem: &str) -> Result<Ca, CertsError> {
        let paths = PemPaths::new(dir, stem);
        Ca::from_pem(&read(&paths.cert)?, &read(&paths.key)?)
    }

    /// The CA's certificate, which every party trusts.
    pub fn cert_pem(&self) -> &str {
        &self.pem.cert_pem
    }

    /// The CA's certificate and private key, e.g. to write them to disk.
    pub fn pem(&self) -> &CertifiedPem {
        &self.pem
    }

    /// A server certificate for `hostnames` (plus `localhost` and `127.0.0.1`), valid for
    /// [`LEAF_VALIDITY`].
    ///
    /// # Errors
    /// [`CertsError::InvalidHostname`] for a name that is neither an IP nor a DNS name.
    pub fn issue_server(&self, hostnames: &[&str]) -> Result<CertifiedPem, CertsError> {
        let leaf = Leaf::Server {
            hostnames: hostnames.iter().map(|name| (*name).to_owned()).collect(),
        };
        self.issue(&leaf, Validity::from_now(LEAF_VALIDITY))
    }

    /// An agent certificate naming `backend`, valid for [`LEAF_VALIDITY`].
    ///
    /// # Errors
    /// [`CertsError`] when key generation or signing fails.
    pub fn issue_agent(&self, backend: &BackendName) -> Result<CertifiedPem, CertsError> {
        let leaf = Leaf::Agent {
            backend: backend.clone(),
        };
        self.issue(&leaf, Validity::from_now(LEAF_VALIDITY))
    }

    /// A generic client certificate named `name`, valid for [`LEAF_VALIDITY`].
    ///
    /// # Errors
    /// [`CertsError::InvalidName`] when `name` is empty or has characters outside
    /// `[A-Za-z0-9._-]`.
    pub fn issue_client(&self, name: &str) -> Result<CertifiedPem, CertsError> {
        let leaf = Leaf::Client {
            name: name.to_owned(),
        };
        self.issue(&leaf, Validity::from_now(LEAF_VALIDITY))
    }

    /// Any kind of certificate with any validity period.
    ///
    /// # Errors
    /// [`CertsError`] for an invalid name or when key generation or signing fails.
    pub fn issue(&self, leaf: &Leaf, validity: Validity) -> Result<CertifiedPem, CertsError> {
        let mut params = leaf_params(leaf)?;
        validity.apply(&mut params)?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(CertsError::KeyGeneration)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|source| CertsError::Sign {
                subject: leaf.subject(),
                source,
            })?;
        Ok(CertifiedPem {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

impl CertifiedPem {
    /// Writes `<dir>/<stem>.crt` (mode 0644) and `<dir>/<stem>.key` (mode 0600).
    ///
    /// Refuses to overwrite either file: replacing a CA key by accident would orphan every
    /// certificate it signed.
    ///
    /// # Errors
    /// [`CertsError::AlreadyExists`] or [`CertsError::Io`], naming the file.
    pub fn write_pem(&self, dir: &Path, stem: &str) -> Result<PemPaths, CertsError> {
        let paths = PemPaths::new(dir, stem);
        for path in [&paths.cert, &paths.key] {
            if path.exists() {
                return Err(CertsError::AlreadyExists { path: path.clone() });
            }
        }
        write_new(&paths.cert, &self.cert_pem, 0o644)?;
        write_new(&paths.key, &self.key_pem, 0o600)?;
        Ok(paths)
    }
}

impl PemPaths {
    /// `<dir>/<stem>.crt` and `<dir>/<stem>.key`.
    pub fn new(dir: &Path, stem: &str) -> PemPaths {
        PemPaths {
            cert: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
        }
    }
}

impl Validity {
    /// From an hour ago (clock skew) until `duration` from now.
    pub fn from_now(duration: Duration) -> Validity {
        let now = SystemTime::now();
        Validity {
            not_before: now.checked_sub(BACKDATE).unwrap_or(now),
            not_after: now.checked_add(duration).unwrap_or(now),
        }
    }

    /// A period that ended `ago` ago and lasted a day: an expired certificate, for tests.
    pub fn expired(ago: Duration) -> Validity {
        let day = Duration::from_secs(24 * 60 * 60);
        let now = SystemTime::now();
        let not_after = now.checked_sub(ago).unwrap_or(SystemTime::UNIX_EPOCH);
        Validity {
            not_before: not_after.checked_sub(day).unwrap_or(SystemTime::UNIX_EPOCH),
            not_after,
        }
    }

    fn apply(&self, params: &mut CertificateParams) -> Result<(), CertsError> {
        // rcgen takes `time::OffsetDateTime`; build it from the epoch plus a std duration so that
        // our API speaks only std types and we need no direct dependency on `time`.
        let epoch = rcgen::date_time_ymd(1970, 1, 1);
        let since_epoch = |moment: SystemTime| {
            moment
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_err(|_| CertsError::BeforeEpoch)
        };
        params.not_before = epoch + since_epoch(self.not_before)?;
        params.not_after = epoch + since_epoch(self.not_after)?;
        Ok(())
    }
}

impl Leaf {
    fn subject(&self) -> String {
        match self {
            Leaf::Server { hostnames } => hostnames
                .first()
                .cloned()
                .unwrap_or_else(|| "localhost".to_owned()),
            Leaf::Agent { backend } => backend.to_string(),
            Leaf::Client { name } => name.clone(),
        }
    }
}

// Deliberately not derived: the private key must not end up in a log line.
impl fmt::Debug for CertifiedPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertifiedPem")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("cert_pem", &self.pem.cert_pem)
            .finish_non_exhaustive()
    }
}

fn leaf_params(leaf: &Leaf) -> Result<CertificateParams, CertsError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(&leaf.subject());
    match leaf {
        Leaf::Server { hostnames } => {
            let mut names: Vec<&str> = hostnames.iter().map(String::as_str).collect();
            for always in ["localhost", "127.0.0.1"] {
                if !names.contains(&always) {
                    names.push(always);
                }
            }
            params.subject_alt_names = names
                .into_iter()
                .map(server_name)
                .collect::<Result<_, _>>()?;
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        }
        Leaf::Agent { backend } => {
            params.subject_alt_names = vec![uri(&backend.to_uri())?];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        Leaf::Client { name } => {
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !valid {
                return Err(CertsError::InvalidName { name: name.clone() });
            }
            params.subject_alt_names = vec![uri(&format!("{CLIENT_URI_PREFIX}{name}"))?];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
    }
    Ok(params)
}

fn common_name(name: &str) -> DistinguishedName {
    let mut distinguished_name = DistinguishedName::new();
    distinguished_name.push(DnType::CommonName, name);
    distinguished_name
}

fn server_name(hostname: &str) -> Result<SanType, CertsError> {
    // rustls's own parser decides, so that a name we put in a certificate is exactly one that
    // clients can verify against (rcgen would accept any ASCII string as a DNS name).
    let invalid = |source| CertsError::InvalidHostname {
        hostname: hostname.to_owned(),
        source,
    };
    match ServerName::try_from(hostname).map_err(invalid)? {
        ServerName::IpAddress(ip) => Ok(SanType::IpAddress(IpAddr::from(ip))),
        ServerName::DnsName(dns) => match dns.as_ref().try_into() {
            Ok(ia5) => Ok(SanType::DnsName(ia5)),
            // A valid DNS name is ASCII, so this cannot happen; reported rather than unwrapped.
            Err(_) => Err(CertsError::InvalidName {
                name: hostname.to_owned(),
            }),
        },
        _ => Err(CertsError::InvalidName {
            name: hostname.to_owned(),
        }),
    }
}

fn uri(value: &str) -> Result<SanType, CertsError> {
    // Only reachable with non-ASCII input, which the name checks above already exclude.
    value
        .try_into()
        .map(SanType::URI)
        .map_err(|_| CertsError::InvalidName {
            name: value.to_owned(),
        })
}

fn read(path: &Path) -> Result<String, CertsError> {
    std::fs::read_to_string(path).map_err(|source| CertsError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })
}

fn write_new(path: &Path, contents: &str, mode: u32) -> Result<(), CertsError> {
    let io_error = |source| CertsError::Io {
        action: "write",
        path: path.to_owned(),
        source,
    };
    let mut options = OpenOptions::new();
    // `create_new` closes the window between the existence check and the write.
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // The mode is set at creation, so the key is never readable by others, not even briefly.
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(|source| {
        if source.kind() == io::ErrorKind::AlreadyExists {
            CertsError::AlreadyExists {
                path: path.to_owned(),
            }
        } else {
            io_error(source)
        }
    })?;
    file.write_all(contents.as_bytes()).map_err(io_error)?;
    file.sync_all().map_err(io_error)
}
