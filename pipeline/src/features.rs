//! The `project.yaml` version feature flags (spec §1.6), kept as data: supporting a version 6 means
//! adding rows to [`FEATURE_FLAGS`].

/// A behaviour switched on by the file's `version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Feature {
    /// The same output path may not appear twice in a project.
    UniqueOutputPath,
    /// `expectations.population_size` is required.
    ExpectationsPopulation,
    /// cohortextractor actions and the `expectations` section are errors.
    RemoveSupportForCohortExtractor,
    /// A user-defined `run_all` action is an error (a warning before).
    RemoveSupportForRunAllAction,
    /// The `:latest` image tag is an error.
    RemoveSupportForLatestTag,
}

/// One row of the table: the feature is on from `introduced` up to `deprecated` inclusive.
#[derive(Clone, Copy, Debug)]
pub struct FeatureFlag {
    /// Which feature.
    pub feature: Feature,
    /// First version with the feature.
    pub introduced: f64,
    /// Last version with the feature, if it ends.
    pub deprecated: Option<f64>,
}

/// The reference's table, in its order.
pub const FEATURE_FLAGS: [FeatureFlag; 5] = [
    FeatureFlag {
        feature: Feature::UniqueOutputPath,
        introduced: 2.0,
        deprecated: None,
    },
    FeatureFlag {
        feature: Feature::ExpectationsPopulation,
        introduced: 3.0,
        deprecated: Some(3.0),
    },
    FeatureFlag {
        feature: Feature::RemoveSupportForCohortExtractor,
        introduced: 4.0,
        deprecated: None,
    },
    FeatureFlag {
        feature: Feature::RemoveSupportForRunAllAction,
        introduced: 5.0,
        deprecated: None,
    },
    FeatureFlag {
        feature: Feature::RemoveSupportForLatestTag,
        introduced: 5.0,
        deprecated: None,
    },
];

/// The newest version: the highest `introduced` in the table.
pub fn latest_version() -> f64 {
    FEATURE_FLAGS
        .iter()
        .map(|flag| flag.introduced)
        .fold(f64::MIN, f64::max)
}

/// Whether `feature` is on for `version`. Fractional versions compare numerically (`4.5` has
/// every flag introduced up to 4).
pub fn is_enabled(feature: Feature, version: f64) -> bool {
    FEATURE_FLAGS
        .iter()
        .filter(|flag| flag.feature == feature)
        .any(|flag| {
            flag.introduced <= version && flag.deprecated.is_none_or(|last| version <= last)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_gives_the_reference_flags_per_version() {
        use Feature::*;
        let all = [
            UniqueOutputPath,
            ExpectationsPopulation,
            RemoveSupportForCohortExtractor,
            RemoveSupportForRunAllAction,
            RemoveSupportForLatestTag,
        ];
        let on = |version: f64| -> Vec<Feature> {
            all.iter()
                .copied()
                .filter(|f| is_enabled(*f, version))
                .collect()
        };
        assert_eq!(latest_version(), 5.0);
        assert_eq!(on(-1.0), []);
        assert_eq!(on(1.0), []);
        assert_eq!(on(2.0), [UniqueOutputPath]);
        assert_eq!(on(3.0), [UniqueOutputPath, ExpectationsPopulation]);
        assert_eq!(on(3.5), [UniqueOutputPath]);
        assert_eq!(on(4.5), [UniqueOutputPath, RemoveSupportForCohortExtractor]);
        assert_eq!(
            on(5.0),
            [
                UniqueOutputPath,
                RemoveSupportForCohortExtractor,
                RemoveSupportForRunAllAction,
                RemoveSupportForLatestTag
            ]
        );
    }
}
