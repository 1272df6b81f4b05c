//! Which actions a local run starts and which earlier results it reuses (spec
//! project-yaml-cli-deploy §1.15 "Scheduling" and §2.2 step 5), as one pure function.
//!
//! The rules are the controller's, in its order: an action named on the command line always
//! runs again; with `--force-run-dependencies` every dependency runs again; otherwise a
//! dependency whose latest job succeeded, and whose output files are all still on disk, is
//! reused. `run_all` (or no action at all) names no action, so it reuses every action that
//! can be reused.

use std::collections::{BTreeSet, HashSet};

use rap_pipeline::{Pipeline, RUN_ALL_COMMAND};

/// What to do for a requested set of actions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Actions to run, every dependency before its dependants.
    pub to_run: Vec<String>,
    /// Dependencies whose earlier successful results are reused.
    pub reused: Vec<String>,
}

/// Why no plan could be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// An action that `project.yaml` does not define.
    #[error("Action '{action}' not found in project.yaml")]
    UnknownAction {
        /// The name as given.
        action: String,
        /// Every action the file defines, in file order.
        valid: Vec<String>,
    },
}

/// Decides the actions to run for `requested` (empty or `run_all`: every action).
/// `reusable` holds the actions whose latest job succeeded and whose outputs all exist.
///
/// # Errors
/// [`PlanError::UnknownAction`] for the first requested action the pipeline lacks.
pub fn plan(
    pipeline: &Pipeline,
    requested: &[String],
    force_run_dependencies: bool,
    reusable: &HashSet<String>,
) -> Result<Plan, PlanError> {
    let run_all = requested.is_empty() || requested.iter().any(|a| a == RUN_ALL_COMMAND);
    let roots: Vec<String> = if run_all {
        pipeline
            .action_names()
            .into_iter()
            .map(str::to_owned)
            .collect()
    } else {
        requested.to_vec()
    };
    let explicitly_requested: HashSet<&str> = if run_all {
        HashSet::new()
    } else {
        requested.iter().map(String::as_str).collect()
    };
    let mut needed = BTreeSet::new();
    for root in &roots {
        let Some(closure) = pipeline.dependency_closure(root) else {
            return Err(PlanError::UnknownAction {
                action: root.clone(),
                valid: pipeline
                    .action_names()
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
            });
        };
        needed.extend(closure.into_iter().map(|action| action.name().to_owned()));
    }
    let mut result = Plan {
        to_run: Vec::new(),
        reused: Vec::new(),
    };
    // Walk in dependency order so both lists read in the order the actions would run.
    for action in pipeline.topological_order() {
        let name = action.name();
        if !needed.contains(name) {
            continue;
        }
        let rerun = explicitly_requested.contains(name)
            || force_run_dependencies
            || !reusable.contains(name);
        if rerun {
            result.to_run.push(name.to_owned());
        } else {
            result.reused.push(name.to_owned());
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROJECT: &str = "version: '4.0'\nactions:\n  \
        a:\n    run: python:v2 a.py\n    outputs:\n      highly_sensitive:\n        x: a.csv\n  \
        b:\n    run: python:v2 b.py\n    needs: [a]\n    outputs:\n      highly_sensitive:\n        x: b.csv\n  \
        c:\n    run: python:v2 c.py\n    needs: [b]\n    outputs:\n      highly_sensitive:\n        x: c.csv\n  \
        d:\n    run: python:v2 d.py\n    outputs:\n      highly_sensitive:\n        x: d.csv\n";

    fn check(requested: &[&str], force: bool, reusable: &[&str], to_run: &[&str], reused: &[&str]) {
        let pipeline = rap_pipeline::load_pipeline(PROJECT).unwrap();
        let requested: Vec<String> = requested.iter().map(|a| a.to_string()).collect();
        let reusable = reusable.iter().map(|a| a.to_string()).collect();
        let plan = plan(&pipeline, &requested, force, &reusable).unwrap();
        assert_eq!(plan.to_run, to_run, "to_run for {requested:?}");
        assert_eq!(plan.reused, reused, "reused for {requested:?}");
    }

    #[test]
    fn dependencies_run_first_and_successes_are_reused() {
        check(&["c"], false, &[], &["a", "b", "c"], &[]);
        check(&["c"], false, &["a"], &["b", "c"], &["a"]);
        // A requested action runs again even when it could be reused.
        check(&["c"], false, &["a", "b", "c"], &["c"], &["a", "b"]);
        check(&["c"], true, &["a", "b", "c"], &["a", "b", "c"], &[]);
        check(&["b", "d"], false, &["a"], &["b", "d"], &["a"]);
    }

    #[test]
    fn run_all_reuses_whatever_it_can() {
        check(&[], false, &[], &["a", "b", "c", "d"], &[]);
        check(&["run_all"], false, &["a", "d"], &["b", "c"], &["a", "d"]);
        check(
            &[],
            false,
            &["a", "b", "c", "d"],
            &[],
            &["a", "b", "c", "d"],
        );
        check(&[], true, &["a", "b", "c", "d"], &["a", "b", "c", "d"], &[]);
    }

    #[test]
    fn unknown_actions_list_the_valid_ones() {
        let pipeline = rap_pipeline::load_pipeline(PROJECT).unwrap();
        let error = plan(&pipeline, &["nope".to_string()], false, &HashSet::new()).unwrap_err();
        assert_eq!(error.to_string(), "Action 'nope' not found in project.yaml");
        assert_eq!(
            error,
            PlanError::UnknownAction {
                action: "nope".into(),
                valid: vec!["a".into(), "b".into(), "c".into(), "d".into()],
            }
        );
    }
}
