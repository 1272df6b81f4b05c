//! `telemetry::init` installs the process-wide subscriber exactly once. In its own test binary
//! because the global subscriber cannot be uninstalled.

use rap_proto::telemetry::{self, TelemetryError};

#[tokio::test]
async fn init_installs_the_global_subscriber_once() {
    assert!(!tracing::dispatcher::has_been_set());

    let guard = telemetry::init("test-service", None).unwrap();

    assert!(tracing::dispatcher::has_been_set());
    assert!(!guard.is_exporting());
    let error = telemetry::init("test-service", None).unwrap_err();
    assert!(
        matches!(error, TelemetryError::AlreadyInstalled(_)),
        "{error:?}"
    );
    guard.shutdown().await.unwrap();
}
