//! The database network against the real Docker engine: created as an internal network when
//! absent, verified when present, and refused precisely when database jobs cannot use it.

mod common;

use common::*;
use rap_agent::executor::ExecutorError;
use rap_agent::executor::docker::{
    DatabaseNetwork, DatabaseNetworkError, DockerExecutor, NETWORK_LABEL,
};

async fn executor_on(network: &str) -> DockerExecutor {
    let dir = tempfile::tempdir().unwrap();
    let mut config = docker_config(dir.path());
    config.database_network = network.to_owned();
    DockerExecutor::connect(config).await.unwrap()
}

#[tokio::test]
async fn a_missing_network_is_created_internal_and_then_only_verified() {
    let network = NetworkGuard::unique("rap-test-create-db");
    let executor = executor_on(&network.0).await;
    assert_eq!(executor.find_database_network().await.unwrap(), None);

    let created = executor.ensure_database_network().await.unwrap();
    let expected = DatabaseNetwork {
        name: network.0.clone(),
        driver: "bridge".into(),
        internal: true,
    };
    assert_eq!(created, expected);
    let networks = networks_named(&network.0).await;
    assert_eq!(networks.len(), 1);
    assert_eq!(networks[0].internal, Some(true));
    assert!(
        networks[0]
            .labels
            .as_ref()
            .is_some_and(|labels| labels.contains_key(NETWORK_LABEL))
    );

    // Again (a restart): the same network is verified, none is added.
    assert_eq!(executor.ensure_database_network().await.unwrap(), expected);
    let again = networks_named(&network.0).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, networks[0].id);
}

#[tokio::test]
async fn an_operator_network_that_is_not_internal_is_used_as_it_is() {
    let network = NetworkGuard::unique("rap-test-operator-db");
    let docker = bollard::Docker::connect_with_unix_defaults()
        .unwrap()
        .negotiate_version()
        .await
        .unwrap();
    docker
        .create_network(bollard::models::NetworkCreateRequest {
            name: network.0.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let executor = executor_on(&network.0).await;
    let found = executor.ensure_database_network().await.unwrap();
    assert!(!found.internal);
    assert_eq!(
        found.to_string(),
        format!(
            "{} (bridge driver, not internal: restricting where it reaches is the operator's)",
            network.0
        )
    );
    assert_eq!(networks_named(&network.0).await.len(), 1);
}

#[tokio::test]
async fn the_host_network_and_none_are_refused() {
    for (name, driver) in [("host", "host"), ("none", "null")] {
        let executor = executor_on(name).await;
        let error = executor.ensure_database_network().await.unwrap_err();
        assert!(
            matches!(
                &error,
                ExecutorError::DatabaseNetwork(DatabaseNetworkError::WrongDriver { name: n, driver: d })
                    if n == name && d == driver
            ),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!(
                "Docker network {name} uses the {driver} driver, which database jobs must not \
                 use: set database.network to a bridge network"
            )
        );
    }
}

#[tokio::test]
async fn two_networks_with_the_name_are_refused_as_ambiguous() {
    let network = NetworkGuard::unique("rap-test-twin-db");
    let docker = bollard::Docker::connect_with_unix_defaults()
        .unwrap()
        .negotiate_version()
        .await
        .unwrap();
    let request = || bollard::models::NetworkCreateRequest {
        name: network.0.clone(),
        internal: Some(true),
        ..Default::default()
    };
    docker.create_network(request()).await.unwrap();
    if let Err(error) = docker.create_network(request()).await {
        // Docker 25 and later refuse a taken name, so the ambiguity cannot arise there.
        assert!(error.to_string().contains("already exists"), "{error}");
        return;
    }
    let executor = executor_on(&network.0).await;
    let error = executor.ensure_database_network().await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "2 Docker networks are named {}, so Docker cannot attach a container to it: remove \
             all but one",
            network.0
        )
    );
    assert_eq!(networks_named(&network.0).await.len(), 2, "nothing changed");
}
