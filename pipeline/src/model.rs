//! The validated project: [`Pipeline`], its [`Action`]s, their [`RunCommand`] and outputs, and the
//! data derived from them (run argv and command line, output spec, database-action flag).
//!
//! Values here are only built by `validate`, so every invariant the rules establish holds: the
//! run string splits, its first word has a valid tag, every `needs` target exists, the needs graph
//! has no cycle, and every output pattern passed the §1.9 rules.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use crate::command;
use crate::features::{self, Feature};
use crate::needs;
use crate::pytext;

/// The user-facing name of the pseudo-action meaning "every action".
pub const RUN_ALL_COMMAND: &str = "run_all";

/// The `version` of a `project.yaml`, a number as the reference stores it (`"4.0"`, `3`, `'5'`
/// and `4.5` are all versions).
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Version(pub(crate) f64);

impl Version {
    /// The version as a number.
    pub fn as_f64(self) -> f64 {
        self.0
    }

    /// Whether a version feature flag (spec §1.6) is on for this version.
    pub fn has(self, feature: Feature) -> bool {
        features::is_enabled(feature, self.0)
    }
}

impl fmt::Display for Version {
    /// Python's float text, as the reference's messages show it (`5.0`, `4.5`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&pytext::float_repr(self.0))
    }
}

/// A privacy level from an action's `outputs` (spec §1.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Privacy {
    /// Level 3 only: stays in the high-privacy workspace.
    HighlySensitive,
    /// Level 3, and copied to Level 4 (visible to Airlock) if the runtime checks pass.
    ModeratelySensitive,
    /// Accepted by the parser; the platform files it like [`Privacy::HighlySensitive`].
    MinimallySensitive,
}

impl Privacy {
    /// Every level, in the order the reference checks and lists them.
    pub const ALL: [Privacy; 3] = [
        Privacy::HighlySensitive,
        Privacy::ModeratelySensitive,
        Privacy::MinimallySensitive,
    ];

    /// The `project.yaml` key (and wire value) for this level.
    pub fn as_str(self) -> &'static str {
        match self {
            Privacy::HighlySensitive => "highly_sensitive",
            Privacy::ModeratelySensitive => "moderately_sensitive",
            Privacy::MinimallySensitive => "minimally_sensitive",
        }
    }

    /// Parses a `project.yaml` key.
    pub fn from_key(key: &str) -> Option<Privacy> {
        Privacy::ALL.into_iter().find(|p| p.as_str() == key)
    }

    /// Whether outputs at this level may be copied to Level 4 (only `moderately_sensitive`).
    pub fn is_level4(self) -> bool {
        self == Privacy::ModeratelySensitive
    }
}

/// One named output pattern of an action.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OutputPattern {
    /// The output's name (the key under its privacy level).
    pub name: String,
    /// The path or `*` glob, relative to the workspace.
    pub pattern: String,
    /// Its privacy level.
    pub privacy: Privacy,
}

/// The `expectations` section (only meaningful to the retired cohortextractor).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expectations {
    /// The dummy-data population size; forced to 1000 for versions up to 2.
    pub population_size: i64,
}

/// The split `run` string of an action: `image:tag args…`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunCommand {
    /// The image name: the first word up to its first `:` (e.g. `python`, `cox-ipw`).
    pub image: String,
    /// The tag: everything after that `:` (e.g. `v2`).
    pub tag: String,
    /// The words after the first, shell-split.
    pub args: Vec<String>,
    /// The `run` string exactly as written (duplicate detection compares this).
    pub raw: String,
}

impl RunCommand {
    /// `image:tag`, the first word of the command.
    pub fn image_with_tag(&self) -> String {
        format!("{}:{}", self.image, self.tag)
    }

    /// Every word, the `image:tag` first.
    pub fn parts(&self) -> Vec<String> {
        let mut parts = Vec::with_capacity(self.args.len() + 1);
        parts.push(self.image_with_tag());
        parts.extend(self.args.iter().cloned());
        parts
    }
}

/// One action of the pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Action {
    pub(crate) name: String,
    pub(crate) run: RunCommand,
    pub(crate) needs: Vec<String>,
    /// Outputs per level, in file order; `None` when the level is absent or `null`.
    pub(crate) outputs: [Option<Vec<(String, String)>>; 3],
    /// `json.dumps(config)`, when `config` is a non-empty mapping.
    pub(crate) config_json: Option<String>,
    pub(crate) dummy_data_file: Option<String>,
}

impl Action {
    /// The action's id (its key under `actions`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The `needs` list as written (duplicates kept, as the reference tolerates them).
    pub fn needs(&self) -> &[String] {
        &self.needs
    }

    /// The split `run` string.
    pub fn run(&self) -> &RunCommand {
        &self.run
    }

    /// The `config` mapping as the JSON text the command receives (Python's `json.dumps`, with
    /// `'` written `\u0027`), when the action has a non-empty `config`.
    pub fn config_json(&self) -> Option<&str> {
        self.config_json.as_deref()
    }

    /// The `dummy_data_file`, if given.
    pub fn dummy_data_file(&self) -> Option<&str> {
        self.dummy_data_file.as_deref()
    }

    /// The arguments after `image:tag` that the job runs with: the `run` args, then `--config
    /// <json>` when `config` is non-empty, then, for `cohortextractor:* generate_cohort` with all
    /// outputs in one directory, `--output-dir=<dir>` (as the controller adds them).
    pub fn run_argv(&self) -> Vec<String> {
        let mut argv = self.run.args.clone();
        if let Some(json) = &self.config_json {
            argv.push("--config".to_owned());
            argv.push(json.clone());
        }
        if self.run.image_with_tag().starts_with("cohortextractor:")
            && self.run.args.first().map(String::as_str) == Some("generate_cohort")
        {
            let dirs = self.output_dirs();
            if let [dir] = dirs.as_slice() {
                argv.push(format!("--output-dir={dir}"));
            }
        }
        argv
    }

    /// The job's full command line: `image:tag` and [`Action::run_argv`], each word shell-quoted
    /// like Python's `shlex.join` (so the config reads `--config '{"a": 1}'`).
    pub fn run_command(&self) -> String {
        let mut words = vec![self.run.image_with_tag()];
        words.extend(self.run_argv());
        command::join(&words)
    }

    /// Every output pattern with its level: highly, then moderately, then minimally sensitive,
    /// each in file order.
    pub fn output_spec(&self) -> Vec<OutputPattern> {
        let mut spec = Vec::new();
        for (privacy, outputs) in Privacy::ALL.into_iter().zip(&self.outputs) {
            for (name, pattern) in outputs.iter().flatten() {
                spec.push(OutputPattern {
                    name: name.clone(),
                    pattern: pattern.clone(),
                    privacy,
                });
            }
        }
        spec
    }

    /// The outputs of one level (`None` when the level is absent or `null`; an empty `{}` gives
    /// `Some(&[])`).
    pub fn outputs_at(&self, privacy: Privacy) -> Option<&[(String, String)]> {
        let index = Privacy::ALL.iter().position(|p| *p == privacy)?;
        self.outputs[index].as_deref()
    }

    /// The distinct directories of the output patterns, in first-seen order (`.` for the
    /// workspace root). The reference uses an unordered set here.
    pub fn output_dirs(&self) -> Vec<String> {
        crate::outputs::output_dirs(&self.outputs)
    }

    /// Whether the job needs database access (spec §1.7): `ehrql generate-dataset` or
    /// `generate-measures`, any `sqlrunner` command, `cohortextractor generate_cohort` or
    /// `generate_codelist_report`, `databuilder generate-dataset`.
    pub fn is_database_action(&self) -> bool {
        is_database_command(&self.run.image, self.run.args.first().map(String::as_str))
    }
}

/// The database-action table of spec §1.7, for an image name and the first argument.
pub fn is_database_command(image: &str, command: Option<&str>) -> bool {
    let commands: &[&str] = match image {
        "sqlrunner" => return true,
        "ehrql" => &["generate-dataset", "generate-measures"],
        "cohortextractor" => &["generate_cohort", "generate_codelist_report"],
        "databuilder" => &["generate-dataset"],
        _ => return false,
    };
    command.is_some_and(|command| commands.contains(&command))
}

/// A validated `project.yaml`.
#[derive(Clone, Debug, PartialEq)]
pub struct Pipeline {
    pub(crate) version: Version,
    /// Every action in file order, a user-defined `run_all` (allowed below v5) included.
    pub(crate) actions: Vec<Action>,
    pub(crate) index: HashMap<String, usize>,
    pub(crate) expectations: Option<Expectations>,
    pub(crate) warnings: Vec<String>,
    /// Indexes into `actions`, every dependency before its dependants.
    pub(crate) topological: Vec<usize>,
}

impl Pipeline {
    /// The file's `version`.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The actions in file order, without a user-defined `run_all` (which the reference ignores).
    pub fn actions(&self) -> impl Iterator<Item = &Action> {
        self.actions
            .iter()
            .filter(|action| action.name != RUN_ALL_COMMAND)
    }

    /// Looks an action up by name. A user-defined `run_all` (below v5) is found here, as in the
    /// reference's action table, though [`Pipeline::actions`] leaves it out.
    pub fn action(&self, name: &str) -> Option<&Action> {
        self.index.get(name).map(|&i| &self.actions[i])
    }

    /// The reference's `all_actions`: every action name in file order, except `run_all`.
    pub fn action_names(&self) -> Vec<&str> {
        self.actions().map(Action::name).collect()
    }

    /// The actions with every dependency before its dependants; among independent actions, file
    /// order. A user-defined `run_all` appears only if another action needs it.
    pub fn topological_order(&self) -> Vec<&Action> {
        self.topological.iter().map(|&i| &self.actions[i]).collect()
    }

    /// The `expectations` after the version rules: `population_size: 1000` for versions up to 2,
    /// the file's section in version 3, `None` from 4.
    pub fn expectations(&self) -> Option<Expectations> {
        self.expectations
    }

    /// Warnings the reference emits (`ProjectWarning: …`): an old version, a user-defined
    /// `run_all` below v5.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The reference's `action_images`: every distinct `image:tag`, with `latest` read as `v1`.
    pub fn action_images(&self) -> BTreeSet<String> {
        self.actions
            .iter()
            .map(|action| {
                let tag = if action.run.tag == "latest" {
                    "v1"
                } else {
                    action.run.tag.as_str()
                };
                format!("{}:{}", action.run.image, tag)
            })
            .collect()
    }

    /// The actions `name` depends on, directly or not, each before its dependants, ending with
    /// `name` itself. `None` for an unknown action.
    pub fn dependency_closure(&self, name: &str) -> Option<Vec<&Action>> {
        let start = *self.index.get(name)?;
        let order = needs::closure(&self.actions, &self.index, start);
        Some(order.into_iter().map(|i| &self.actions[i]).collect())
    }
}
