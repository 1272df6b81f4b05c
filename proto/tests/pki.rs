//! Certificate minting and TLS configuration from files: the errors an operator sees for a
//! wrong path, an empty or mismatched file, and what `certs` writes to disk.

use std::time::Duration;

use rap_proto::certs::{Ca, CertsError, Leaf, Validity};
use rap_proto::identity::{self, BackendName, IdentityError};
use rap_proto::tls::{self, PemOrigin, PemRole, TlsConfigError, TlsFiles, TlsPem};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

fn der(cert_pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[test]
fn agent_certificate_names_its_backend_by_uri() {
    let ca = Ca::new("test CA").unwrap();
    let backend = BackendName::new("tpp").unwrap();
    let agent = ca.issue_agent(&backend).unwrap();

    assert_eq!(
        identity::backend_from_certificate(&der(&agent.cert_pem)),
        Ok(backend)
    );
}

#[test]
fn only_agent_certificates_name_a_backend() {
    let ca = Ca::new("test CA").unwrap();
    let client = ca.issue_client("operator").unwrap();
    let server = ca.issue_server(&["controller.test"]).unwrap();

    for cert_pem in [&client.cert_pem, &server.cert_pem, &ca.pem().cert_pem] {
        assert_eq!(
            identity::backend_from_certificate(&der(cert_pem)),
            Err(IdentityError::NotAnAgent)
        );
    }
}

#[test]
fn invalid_names_are_refused() {
    let ca = Ca::new("test CA").unwrap();
    for name in ["", "has space", "slash/y", "ünï"] {
        let error = ca.issue_client(name).unwrap_err();
        assert!(
            matches!(error, CertsError::InvalidName { .. }),
            "{name:?}: {error:?}"
        );
    }
    let error = ca.issue_server(&["bad host name!"]).unwrap_err();
    assert!(
        matches!(
            error,
            CertsError::InvalidHostname { .. } | CertsError::InvalidName { .. }
        ),
        "{error:?}"
    );
    let before_epoch = Validity {
        not_before: std::time::UNIX_EPOCH - Duration::from_secs(1),
        not_after: std::time::SystemTime::now(),
    };
    let leaf = Leaf::Client {
        name: "x".to_owned(),
    };
    assert!(matches!(
        ca.issue(&leaf, before_epoch),
        Err(CertsError::BeforeEpoch)
    ));
}

#[test]
fn written_key_is_private_and_files_are_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA").unwrap();
    let paths = ca.pem().write_pem(dir.path(), "ca").unwrap();

    assert_eq!(paths.cert, dir.path().join("ca.crt"));
    assert_eq!(
        std::fs::read_to_string(&paths.key).unwrap(),
        ca.pem().key_pem
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&paths.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let other = Ca::new("another CA").unwrap();
    let error = other.pem().write_pem(dir.path(), "ca").unwrap_err();
    assert!(
        matches!(error, CertsError::AlreadyExists { ref path } if *path == paths.cert),
        "{error:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&paths.key).unwrap(),
        ca.pem().key_pem,
        "key untouched"
    );
}

#[test]
fn missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.crt");
    let files = TlsFiles {
        ca: missing.clone(),
        cert: missing.clone(),
        key: missing.clone(),
    };

    let error = tls::mtls_server(&files).unwrap_err();

    match &error {
        TlsConfigError::Read { role, path, .. } => {
            assert_eq!(*role, PemRole::CaCertificate);
            assert_eq!(*path, missing);
        }
        other => panic!("{other:?}"),
    }
    assert!(error.to_string().contains("nope.crt"), "{error}");
}

#[test]
fn empty_certificate_and_key_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA").unwrap();
    let server = ca.issue_server(&[]).unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let cert = dir.path().join("server.crt");
    std::fs::write(&cert, &server.cert_pem).unwrap();

    let error = tls::tls_server(&empty, &empty).unwrap_err();
    assert!(
        matches!(&error, TlsConfigError::NoCertificate { role: PemRole::Certificate, origin: PemOrigin::File(path) } if *path == empty),
        "{error:?}"
    );
    assert!(error.to_string().contains("empty.pem"), "{error}");

    let error = tls::tls_server(&cert, &empty).unwrap_err();
    assert!(
        matches!(&error, TlsConfigError::NoPrivateKey { origin: PemOrigin::File(path) } if *path == empty),
        "{error:?}"
    );

    let error = tls::tls_client(&empty).unwrap_err();
    assert!(
        matches!(
            &error,
            TlsConfigError::NoCertificate {
                role: PemRole::CaCertificate,
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn key_of_another_certificate_is_refused() {
    let ca = Ca::new("test CA").unwrap();
    let server = ca.issue_server(&[]).unwrap();
    let agent = ca.issue_agent(&BackendName::new("tpp").unwrap()).unwrap();
    let mismatched = TlsPem {
        ca: ca.cert_pem().to_owned(),
        cert: server.cert_pem.clone(),
        key: agent.key_pem.clone(),
    };

    let error = tls::mtls_server_from_pem(&mismatched).unwrap_err();
    assert!(
        matches!(error, TlsConfigError::CertificateAndKey { .. }),
        "{error:?}"
    );
    let error = tls::mtls_client_from_pem(&mismatched).unwrap_err();
    assert!(
        matches!(error, TlsConfigError::CertificateAndKey { .. }),
        "{error:?}"
    );
}

#[test]
fn garbage_pem_is_an_error_not_a_panic() {
    let garbage = "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n";
    let error = tls::tls_client_from_pem(garbage).unwrap_err();
    assert!(
        matches!(
            error,
            TlsConfigError::InvalidPem { .. } | TlsConfigError::InvalidCa { .. }
        ),
        "{error:?}"
    );
    let error = Ca::from_pem(garbage, garbage).unwrap_err();
    assert!(matches!(error, CertsError::InvalidCa { .. }), "{error:?}");
}

#[test]
fn private_keys_are_redacted_in_debug_output() {
    let ca = Ca::new("test CA").unwrap();
    let agent = ca.issue_agent(&BackendName::new("tpp").unwrap()).unwrap();
    let pem = TlsPem {
        ca: ca.cert_pem().to_owned(),
        cert: agent.cert_pem.clone(),
        key: agent.key_pem.clone(),
    };
    for debug in [format!("{agent:?}"), format!("{pem:?}"), format!("{ca:?}")] {
        assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    }
}
