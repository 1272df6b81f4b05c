//! Bearer tokens: each client's token is configured as its SHA-256, and compared in constant
//! time; a token maps to the backends its client may act on (spec §2.1).

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::Status;
use tonic::metadata::MetadataMap;

use super::status_with_class;

/// Configured clients.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    entries: Vec<([u8; 32], Vec<String>)>,
}

impl Tokens {
    /// Build from (hex SHA-256, backends) pairs; malformed hashes are skipped (config
    /// validation reports them first).
    pub fn new(entries: impl IntoIterator<Item = (String, Vec<String>)>) -> Tokens {
        let entries = entries
            .into_iter()
            .filter_map(|(hash, backends)| {
                let bytes = hex::decode(hash.trim()).ok()?;
                let hash: [u8; 32] = bytes.try_into().ok()?;
                Some((hash, backends))
            })
            .collect();
        Tokens { entries }
    }

    /// The backends of the caller's token.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` "No token provided" or "Invalid token".
    #[allow(clippy::result_large_err)] // returned straight from handlers
    pub fn backends(&self, metadata: &MetadataMap) -> Result<Vec<String>, Status> {
        let Some(value) = metadata.get("authorization") else {
            return Err(unauthorized("No token provided"));
        };
        let Ok(value) = value.to_str() else {
            return Err(unauthorized("Invalid token"));
        };
        // The reference compares the raw header; we accept that and the `Bearer ` form.
        let token = value.strip_prefix("Bearer ").unwrap_or(value).trim();
        if token.is_empty() {
            return Err(unauthorized("No token provided"));
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found: Option<&Vec<String>> = None;
        // Compare against every entry so timing does not reveal which one matched.
        for (hash, backends) in &self.entries {
            if bool::from(hash.ct_eq(&digest)) {
                found = Some(backends);
            }
        }
        found.cloned().ok_or_else(|| unauthorized("Invalid token"))
    }
}

fn unauthorized(details: &str) -> Status {
    status_with_class(
        tonic::Code::Unauthenticated,
        "Unauthorized",
        details.to_string(),
    )
}

/// The SHA-256 (hex) of a token, as the configuration stores it.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_map_to_backends() {
        let tokens = Tokens::new([(token_hash("secret"), vec!["test".to_string()])]);
        let mut md = MetadataMap::new();
        assert_eq!(
            tokens.backends(&md).unwrap_err().message(),
            "No token provided"
        );
        md.insert("authorization", "Bearer nope".parse().unwrap());
        let err = tokens.backends(&md).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        assert_eq!(err.message(), "Invalid token");
        assert_eq!(err.metadata().get("rap-error").unwrap(), "Unauthorized");
        md.insert("authorization", "Bearer secret".parse().unwrap());
        assert_eq!(tokens.backends(&md).unwrap(), ["test"]);
        md.insert("authorization", "secret".parse().unwrap());
        assert_eq!(tokens.backends(&md).unwrap(), ["test"]);
    }
}
