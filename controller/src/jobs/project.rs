//! The controller's view of a `project.yaml`: only what job creation needs, built from
//! `rap_pipeline`'s parsed pipeline by [`Project::from_pipeline`].
//!
//! Keeping this small view (rather than passing the pipeline around) lets job creation be tested
//! with hand-made projects and keeps the pipeline crate's API at one place.

use crate::jobs::{OutputPattern, Privacy};

/// One action, as job creation sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectAction {
    pub name: String,
    pub needs: Vec<String>,
    /// The full command, `image:tag` first, with ` --config '<json>'` when configured.
    pub run_command: String,
    pub requires_db: bool,
    pub outputs: Vec<OutputPattern>,
    /// For a reusable action: its repository and commit (§3.5 step 8).
    pub action_repo: Option<(String, String)>,
}

/// The actions of a project, in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Project {
    pub actions: Vec<ProjectAction>,
}

impl Project {
    pub fn action(&self, name: &str) -> Option<&ProjectAction> {
        self.actions.iter().find(|action| action.name == name)
    }
}

impl Project {
    /// Parse and validate `project.yaml` text with the pipeline library.
    ///
    /// # Errors
    /// The pipeline library's validation message, verbatim.
    pub fn parse(text: &str) -> Result<Project, String> {
        let pipeline = rap_pipeline::load_pipeline(text).map_err(|e| e.message().to_string())?;
        Ok(Project::from_pipeline(&pipeline))
    }

    /// Convert a parsed pipeline. `minimally_sensitive` outputs are filed as highly sensitive:
    /// the wire contract knows two levels, and the stricter one is the safe choice.
    pub fn from_pipeline(pipeline: &rap_pipeline::Pipeline) -> Project {
        let actions = pipeline
            .actions()
            .map(|action| ProjectAction {
                name: action.name().to_string(),
                needs: action.needs().to_vec(),
                run_command: action.run_command(),
                requires_db: action.is_database_action(),
                outputs: action
                    .output_spec()
                    .into_iter()
                    .map(|output| OutputPattern {
                        privacy: match output.privacy {
                            rap_pipeline::Privacy::ModeratelySensitive => {
                                Privacy::ModeratelySensitive
                            }
                            _ => Privacy::HighlySensitive,
                        },
                        name: output.name,
                        pattern: output.pattern,
                    })
                    .collect(),
                action_repo: None,
            })
            .collect();
        Project { actions }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_a_real_project_yaml() {
        let text = r#"
version: '4.0'
actions:
  generate_dataset:
    run: ehrql:v1 generate-dataset analysis/dataset_definition.py --output output/dataset.csv.gz
    outputs:
      highly_sensitive:
        dataset: output/dataset.csv.gz
  analyse:
    run: python:v2 analysis/analyse.py
    needs: [generate_dataset]
    outputs:
      moderately_sensitive:
        table: output/table.csv
"#;
        let project = Project::parse(text).unwrap();
        let names: Vec<&str> = project.actions.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["generate_dataset", "analyse"]);
        let generate = project.action("generate_dataset").unwrap();
        assert!(generate.requires_db);
        assert!(
            generate
                .run_command
                .starts_with("ehrql:v1 generate-dataset")
        );
        let analyse = project.action("analyse").unwrap();
        assert!(!analyse.requires_db);
        assert_eq!(analyse.needs, ["generate_dataset"]);
        assert_eq!(analyse.outputs[0].privacy, Privacy::ModeratelySensitive);
        assert!(Project::parse(": : :").is_err());
    }
}
