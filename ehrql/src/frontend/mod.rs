//! Front ends: ways to obtain a query-model [`Dataset`](crate::query_model::Dataset).
//! [`json`] reads ehrQL's serializer JSON (spec §9); [`language`] reads `.py` definitions in the
//! ehrQL language without running Python (spec §3). Both return a [`Definition`]: the dataset
//! plus what the definition declares for dummy data and permissions.

pub mod json;
pub mod language;

use crate::query_model::{Dataset, NodeId};

/// What a definition file declares besides the dataset itself.
#[derive(Clone, Debug)]
pub struct Definition {
    /// The validated query-model dataset.
    pub dataset: Dataset,
    /// Settings from `dataset.configure_dummy_data(...)` (defaults otherwise).
    pub dummy_data_config: DummyDataConfig,
    /// Permissions named in `claim_permissions(...)`, in call order.
    pub claimed_permissions: Vec<String>,
}

/// `dataset.configure_dummy_data(...)` settings (spec §3.1); used only by dummy-data generation.
#[derive(Clone, Debug, PartialEq)]
pub struct DummyDataConfig {
    /// Number of dummy patients (reference default 10).
    pub population_size: i64,
    /// Whether the legacy generator was asked for.
    pub legacy: bool,
    /// Generation time limit in seconds (reference default 60).
    pub timeout: i64,
    /// A patient-level bool series (a node of the dataset's graph) that dummy patients must
    /// also satisfy, besides the population.
    pub additional_population_constraint: Option<NodeId>,
}

impl Default for DummyDataConfig {
    fn default() -> DummyDataConfig {
        DummyDataConfig {
            population_size: 10,
            legacy: false,
            timeout: 60,
            additional_population_constraint: None,
        }
    }
}
