//! Who is calling: the backend an authenticated agent speaks for, read from its client
//! certificate inside a handler.
//!
//! Convention (minted by [`crate::certs::Ca::issue_agent`]): an agent certificate carries exactly
//! one subject-alternative-name URI `rap://backend/<name>`, and that URI is authoritative. Its
//! subject common name is also `<name>`, but only to make the certificate readable to operators
//! (`openssl x509 -text`); the common name is never trusted, because a URI SAN is a typed,
//! unambiguous field while a CN is free text that other tools also fill in. A certificate may
//! pass the TLS handshake (it was signed by our CA) and still name no backend, e.g. a generic
//! client certificate (`rap://client/<name>`): such a peer is not an agent.
//!
//! The TLS layer has already checked the chain, the validity period and the client-auth key
//! usage by the time a handler runs; this module only reads the name. It touches tonic (the
//! request's peer certificates) and x509-parser, nothing else.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;
use tonic::Request;
use x509_parser::extensions::GeneralName;

/// The URI prefix of the subject-alternative name that names an agent's backend.
pub const BACKEND_URI_PREFIX: &str = "rap://backend/";

/// The URI prefix of the subject-alternative name of a generic (non-agent) client certificate.
pub const CLIENT_URI_PREFIX: &str = "rap://client/";

/// The longest backend name: it must fit an X.509 common name (at most 64 characters).
pub const BACKEND_NAME_MAX_LEN: usize = 64;

/// A backend's name: non-empty, at most [`BACKEND_NAME_MAX_LEN`] characters of `[a-z0-9_-]`.
///
/// The restricted alphabet keeps the name safe to put in a URI, a file name and a log line
/// without escaping.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendName(String);

/// Why a string is not a valid [`BackendName`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum InvalidBackendName {
    /// The name is empty.
    #[error("backend name is empty")]
    Empty,
    /// The name is longer than [`BACKEND_NAME_MAX_LEN`].
    #[error("backend name is {len} characters long; the limit is {BACKEND_NAME_MAX_LEN}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The name holds a character outside `[a-z0-9_-]`.
    #[error("backend name {name:?} contains {character:?}; use only a-z, 0-9, '_' and '-'")]
    BadCharacter {
        /// The whole name as given.
        name: String,
        /// The first offending character.
        character: char,
    },
}

/// Why no backend identity could be read from a request.
///
/// Callers map every variant to `Status::unauthenticated` (see [`unauthenticated`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The connection presented no client certificate (plain TLS, or no TLS at all).
    #[error("no client certificate was presented")]
    NoCertificate,
    /// The leaf certificate is not valid DER X.509.
    #[error("the client certificate cannot be parsed: {reason}")]
    Unparseable {
        /// The parser's message.
        reason: String,
    },
    /// The certificate names no backend (no `rap://backend/…` URI).
    #[error("the client certificate names no backend (no {BACKEND_URI_PREFIX}<name> URI)")]
    NotAnAgent,
    /// The certificate names more than one backend.
    #[error("the client certificate names several backends: {names:?}")]
    SeveralBackends {
        /// The names found, as written.
        names: Vec<String>,
    },
    /// The backend URI holds an invalid name.
    #[error("the client certificate's backend URI is invalid")]
    InvalidBackend(#[source] InvalidBackendName),
}

impl BackendName {
    /// Checks `name` and wraps it.
    ///
    /// # Errors
    /// [`InvalidBackendName`] when it is empty, too long or has a character outside `[a-z0-9_-]`.
    pub fn new(name: &str) -> Result<BackendName, InvalidBackendName> {
        if name.is_empty() {
            return Err(InvalidBackendName::Empty);
        }
        if name.len() > BACKEND_NAME_MAX_LEN {
            return Err(InvalidBackendName::TooLong { len: name.len() });
        }
        let bad = name
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-'));
        if let Some(character) = bad {
            return Err(InvalidBackendName::BadCharacter {
                name: name.to_owned(),
                character,
            });
        }
        Ok(BackendName(name.to_owned()))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The subject-alternative-name URI that names this backend in an agent certificate.
    pub fn to_uri(&self) -> String {
        format!("{BACKEND_URI_PREFIX}{}", self.0)
    }
}

impl fmt::Display for BackendName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for BackendName {
    type Err = InvalidBackendName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BackendName::new(s)
    }
}

impl AsRef<str> for BackendName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The backend of the agent that sent `request`, from its verified client certificate.
///
/// Use it first thing in an `AgentService` handler, on a server built with
/// [`crate::tls::mtls_server`] (tonic's own TLS acceptor: only it records the peer's
/// certificates on the request).
///
/// # Errors
/// [`IdentityError`] when there is no client certificate or it names no single valid backend.
pub fn backend_from_request<T>(request: &Request<T>) -> Result<BackendName, IdentityError> {
    let Some(chain) = request.peer_certs() else {
        return Err(IdentityError::NoCertificate);
    };
    // The leaf comes first in the chain a TLS peer presents (RFC 8446 §4.4.2).
    let Some(leaf) = chain.first() else {
        return Err(IdentityError::NoCertificate);
    };
    backend_from_certificate(leaf.as_ref())
}

/// A tonic interceptor that admits only agents and records their backend in the request's
/// extensions, so that no handler can forget the check:
/// `AgentServiceServer::with_interceptor(service, identity::require_agent)`, then
/// [`authenticated_backend`] in the handler.
///
/// # Errors
/// `Status::unauthenticated` when the peer's certificate names no single valid backend.
#[allow(clippy::result_large_err)] // tonic's interceptor signature
pub fn require_agent(mut request: Request<()>) -> Result<Request<()>, tonic::Status> {
    let backend = backend_from_request(&request).map_err(|error| unauthenticated(&error))?;
    request.extensions_mut().insert(backend);
    Ok(request)
}

/// The backend [`require_agent`] recorded for this request.
///
/// # Errors
/// `Status::unauthenticated` when the service was mounted without [`require_agent`], so a
/// wiring mistake refuses every caller rather than admitting them.
#[allow(clippy::result_large_err)] // returned straight from handlers
pub fn authenticated_backend<T>(request: &Request<T>) -> Result<&BackendName, tonic::Status> {
    request
        .extensions()
        .get::<BackendName>()
        .ok_or_else(|| tonic::Status::unauthenticated("no authenticated agent on this request"))
}

/// The backend named by a DER-encoded agent certificate (see the module doc for the convention).
///
/// # Errors
/// [`IdentityError`] when the certificate cannot be parsed or names no single valid backend.
pub fn backend_from_certificate(der: &[u8]) -> Result<BackendName, IdentityError> {
    let (_, certificate) = match x509_parser::parse_x509_certificate(der) {
        Ok(parsed) => parsed,
        Err(error) => {
            return Err(IdentityError::Unparseable {
                reason: error.to_string(),
            });
        }
    };
    let alt_names = match certificate.subject_alternative_name() {
        Ok(Some(extension)) => &extension.value.general_names,
        Ok(None) => return Err(IdentityError::NotAnAgent),
        Err(error) => {
            return Err(IdentityError::Unparseable {
                reason: error.to_string(),
            });
        }
    };
    let names: Vec<&str> = alt_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => uri.strip_prefix(BACKEND_URI_PREFIX),
            _ => None,
        })
        .collect();
    match names.as_slice() {
        [] => Err(IdentityError::NotAnAgent),
        [name] => BackendName::new(name).map_err(IdentityError::InvalidBackend),
        _ => Err(IdentityError::SeveralBackends {
            names: names.iter().map(|name| (*name).to_owned()).collect(),
        }),
    }
}

/// The status a handler returns for an [`IdentityError`]: `unauthenticated`, with the reason.
///
/// The reason is safe to show: it describes the peer's own certificate.
pub fn unauthenticated(error: &IdentityError) -> tonic::Status {
    tonic::Status::unauthenticated(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, expected: Result<(), InvalidBackendName>) {
        let actual = BackendName::new(name).map(|parsed| assert_eq!(parsed.as_str(), name));
        assert_eq!(actual, expected, "for {name:?}");
    }

    #[test]
    fn backend_names() {
        check("tpp", Ok(()));
        check("test-backend_2", Ok(()));
        check(&"a".repeat(64), Ok(()));
        check("", Err(InvalidBackendName::Empty));
        check(
            &"a".repeat(65),
            Err(InvalidBackendName::TooLong { len: 65 }),
        );
        for (name, character) in [("TPP", 'T'), ("a/b", '/'), ("a b", ' '), ("é", 'é')] {
            check(
                name,
                Err(InvalidBackendName::BadCharacter {
                    name: name.to_owned(),
                    character,
                }),
            );
        }
    }

    #[test]
    fn garbage_is_unparseable_not_a_panic() {
        let error = backend_from_certificate(b"not a certificate").unwrap_err();
        assert!(
            matches!(error, IdentityError::Unparseable { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn interceptor_refuses_without_certificate_and_handler_finds_nothing() {
        let status = require_agent(Request::new(())).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        let status = authenticated_backend(&Request::new(())).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn request_without_tls_has_no_certificate() {
        let error = backend_from_request(&Request::new(())).unwrap_err();
        assert_eq!(error, IdentityError::NoCertificate);
        assert_eq!(unauthenticated(&error).code(), tonic::Code::Unauthenticated);
    }
}
