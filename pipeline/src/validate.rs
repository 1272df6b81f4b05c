//! The rules, in the reference's order (spec §1.8): the first failure wins and carries the
//! reference's message. Builds the [`Pipeline`] from the YAML tree as it goes.
//!
//! Where the reference leaks a raw Python exception (a non-mapping document, a version above the
//! latest, an unsplittable `run`, a non-string `needs` item) we fail with our own message at the
//! same point in the order; after every reference rule has passed we also reject dependency
//! cycles. Each such difference is listed in the crate README.

use std::collections::HashMap;

use crate::command::{self, SplitError};
use crate::error::Failure;
use crate::features::{self, Feature};
use crate::glob;
use crate::model::{Action, Expectations, Pipeline, Privacy, RUN_ALL_COMMAND, RunCommand, Version};
use crate::needs;
use crate::outputs::{self, Levels};
use crate::pytext;
use crate::yaml::{self, Node, Value};

const PROJECT_KEYS: [&str; 3] = ["version", "actions", "expectations"];
const ACTION_KEYS: [&str; 5] = ["run", "outputs", "needs", "config", "dummy_data_file"];

fn fail<T>(reason: impl Into<String>, node: Option<&Node>) -> Result<T, Failure> {
    Err(Failure::schema(reason, node.map(|n| n.location)))
}

/// Validates a parsed document (`None` for an empty stream) into a [`Pipeline`].
pub(crate) fn build(root: Option<&Node>) -> Result<Pipeline, Failure> {
    let Some(root) = root else {
        // The reference raises a raw TypeError here.
        return fail(
            "Project file is empty; it must be a dictionary of key/value pairs with `version` and `actions` sections",
            None,
        );
    };
    let Some(top) = root.as_map() else {
        return fail(
            format!(
                "Project file must be a dictionary of key/value pairs, not {}",
                describe(&root.value)
            ),
            Some(root),
        );
    };
    check_no_unexpected(top, &PROJECT_KEYS, "project")?;

    let mut warnings = Vec::new();
    let version = check_version(top, root, &mut warnings)?;

    let actions_node = yaml::get(top, "actions");
    let Some(action_entries) = actions_node.and_then(Node::as_map) else {
        return fail(
            "Project `actions` section must be a dictionary of key/value pairs",
            actions_node.or(Some(root)),
        );
    };

    let mut actions: Vec<Action> = Vec::with_capacity(action_entries.len());
    let mut index: HashMap<String, usize> = HashMap::with_capacity(action_entries.len());
    // Where each action was defined, for locating later errors.
    let mut places: Vec<&Node> = Vec::with_capacity(action_entries.len());
    for (key, config) in action_entries {
        let action_id = key.key_text();
        if action_id == RUN_ALL_COMMAND {
            if version.has(Feature::RemoveSupportForRunAllAction) {
                return fail(
                    "`run_all` is a reserved action name and is not allowed for user-defined actions.",
                    Some(key),
                );
            }
            warnings.push(
                "ProjectWarning: `run_all` is a reserved action name; user-defined actions with this name are ignored and will raise an error in later versions."
                    .to_owned(),
            );
        }
        if index.contains_key(&action_id) {
            // Only reachable with keys that differ in YAML but print alike (`1` and `'1'`).
            return fail(
                format!("Action {action_id} is defined more than once"),
                Some(key),
            );
        }
        let action = build_action(&action_id, key, config)?;
        index.insert(action_id, actions.len());
        actions.push(action);
        places.push(key);
    }

    if version.has(Feature::RemoveSupportForCohortExtractor) {
        for (action, place) in actions.iter().zip(&places) {
            if action.run.image_with_tag().starts_with("cohortextractor") {
                return fail(
                    format!(
                        "Action {} uses cohortextractor actions, which are not supported in this version.",
                        action.name
                    ),
                    Some(place),
                );
            }
        }
    }

    if version.has(Feature::RemoveSupportForLatestTag) {
        for (action, place) in actions.iter().zip(&places) {
            let first = action.run.image_with_tag();
            if first.ends_with(":latest") {
                return fail(
                    format!(
                        "Action {} uses `{first}`, which is not supported. Provide a version e.g. `:v2` instead",
                        action.name
                    ),
                    Some(place),
                );
            }
        }
    }

    let mut seen_runs: HashMap<&str, &str> = HashMap::new();
    for (action, place) in actions.iter().zip(&places) {
        if let Some(first) = seen_runs.get(action.run.raw.as_str()) {
            return fail(
                format!(
                    "Action {} has the same 'run' command as other actions: {first}",
                    action.name
                ),
                Some(place),
            );
        }
        seen_runs.insert(&action.run.raw, &action.name);
    }

    if version.has(Feature::UniqueOutputPath) {
        let mut seen_paths: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for (action, place) in actions.iter().zip(&places) {
            for (_, pattern) in action.outputs.iter().flatten().flatten() {
                if !seen_paths.insert(pattern) {
                    return fail(format!("Output path {pattern} is not unique"), Some(place));
                }
            }
        }
    }

    for (action, place) in actions.iter().zip(&places) {
        for target in &action.needs {
            if !index.contains_key(target) {
                return fail(
                    format!(
                        "Action `{}` references an unknown action in its `needs` list: {target}",
                        action.name
                    ),
                    Some(place),
                );
            }
        }
    }

    let expectations = check_expectations(top, version)?;

    if let Some(cycle) = needs::find_cycle(&actions, &index) {
        let place = index.get(&cycle[0]).map(|&i| places[i]);
        return fail(
            format!(
                "Action {} has a circular dependency: {}",
                cycle[0],
                cycle.join(" -> ")
            ),
            place,
        );
    }

    let topological = needs::topological(&actions, &index);
    Ok(Pipeline {
        version,
        actions,
        index,
        expectations,
        warnings,
        topological,
    })
}

/// Step 2: `version` present, numeric, not above the latest.
fn check_version(
    top: &[(Node, Node)],
    root: &Node,
    warnings: &mut Vec<String>,
) -> Result<Version, Failure> {
    let latest = features::latest_version();
    let latest_text = format_latest(latest);
    let node = yaml::get(top, "version").filter(|node| !node.is_null());
    let Some(node) = node else {
        return fail(
            format!(
                "Project file must have a `version` attribute specifying which version of the project configuration format it uses (current latest version is {latest_text})"
            ),
            Some(root),
        );
    };
    let number = match &node.value {
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        Value::Str(s) => pytext::python_float_from_str(s),
        _ => None,
    };
    // NaN passes every check in the reference (all comparisons are false); we refuse it.
    let Some(number) = number.filter(|n| !n.is_nan()) else {
        return fail(
            format!("`version` must be a number between 1 and {latest_text}"),
            Some(node),
        );
    };
    let version = Version(number);
    if number != latest {
        warnings.push(format!(
            "ProjectWarning: Your project file is using an old version ({version}); consider updating to version {latest_text}"
        ));
    }
    if number > latest {
        // The reference raises a raw ValueError with this text.
        return fail(
            format!("The latest version is v{latest_text}, but got v{version}"),
            Some(node),
        );
    }
    Ok(version)
}

/// The latest version as the reference prints it: an integer (`5`).
fn format_latest(latest: f64) -> String {
    if latest.fract() == 0.0 {
        format!("{}", latest as i64)
    } else {
        pytext::float_repr(latest)
    }
}

/// Step 4 for one action.
fn build_action(action_id: &str, key: &Node, config: &Node) -> Result<Action, Failure> {
    let Some(entries) = config.as_map() else {
        return fail(
            format!("Configuration for action {action_id} must be a dictionary of key/value pairs"),
            Some(config),
        );
    };
    for required in ["run", "outputs"] {
        if yaml::get(entries, required).is_none() {
            return fail(
                format!("Action {action_id} must contain a configuration for '{required}'"),
                Some(key),
            );
        }
    }
    check_no_unexpected(entries, &ACTION_KEYS, &format!("action {action_id}"))?;

    // Both were found above.
    let outputs_node = yaml::get(entries, "outputs").unwrap_or(config);
    let run_node = yaml::get(entries, "run").unwrap_or(config);
    let needs_node = yaml::get(entries, "needs").filter(|n| !n.is_null());
    let config_node = yaml::get(entries, "config").filter(|n| !n.is_null());
    let dummy_node = yaml::get(entries, "dummy_data_file").filter(|n| !n.is_null());

    let Some(output_entries) = outputs_node.as_map() else {
        return fail(
            format!(
                "`outputs` section for action {action_id} must be a dictionary of key/value pairs"
            ),
            Some(outputs_node),
        );
    };
    let Some(raw) = run_node.as_str() else {
        return fail(
            format!("`run` section for action {action_id} must be a string"),
            Some(run_node),
        );
    };
    let needs_items = match needs_node {
        None => &[][..],
        Some(Node {
            value: Value::Seq(items),
            ..
        }) => items.as_slice(),
        Some(other) => {
            return fail(
                format!("`needs` section for action {action_id} must be a list"),
                Some(other),
            );
        }
    };
    let config_entries = match config_node {
        None => None,
        Some(
            node @ Node {
                value: Value::Map(entries),
                ..
            },
        ) => Some((node, entries)),
        Some(other) => {
            return fail(
                format!(
                    "`config` section for action {action_id} must be a dictionary of key/value pairs"
                ),
                Some(other),
            );
        }
    };
    let dummy_data_file = match dummy_node {
        None => None,
        Some(node) => match node.as_str() {
            Some(text) => Some(text.to_owned()),
            None => {
                return fail(
                    format!("`dummy_data_file` section for action {action_id} must be a string"),
                    Some(node),
                );
            }
        },
    };

    let levels = build_outputs(action_id, outputs_node, output_entries)?;
    let run = parse_run(action_id, raw, run_node)?;

    let mut needs = Vec::with_capacity(needs_items.len());
    for item in needs_items {
        let Some(target) = item.as_str() else {
            // The reference raises a raw TypeError here.
            return fail(
                format!(
                    "`needs` section for action {action_id} must be a list of action names, but it contains {}",
                    pytext::python_repr(&item.value)
                ),
                Some(item),
            );
        };
        if target.contains(' ') {
            return fail(
                format!(
                    "`needs` actions should be separated with commas, but {action_id} needs `{target}`"
                ),
                Some(item),
            );
        }
        needs.push(target.to_owned());
    }

    let parts = run.parts();
    if command::raw_matches(&run.raw, &["cohortextractor"], &["generate_cohort"]) {
        outputs::check_cohortextractor(action_id, &levels, &parts)
            .map_err(|reason| Failure::schema(reason, Some(run_node.location)))?;
    }
    if command::raw_matches(
        &run.raw,
        &["ehrql", "databuilder"],
        &["generate-dataset", "generate_dataset"],
    ) {
        outputs::check_ehrql(action_id, &levels, &parts)
            .map_err(|reason| Failure::schema(reason, Some(run_node.location)))?;
    }

    // An empty `config` is falsy in the reference: no `--config` is added.
    let config_json = config_entries
        .filter(|(_, entries)| !entries.is_empty())
        .map(|(node, _)| pytext::json_dumps(node).replace('\'', "\\u0027"));

    Ok(Action {
        name: action_id.to_owned(),
        run,
        needs,
        outputs: levels,
        config_json,
        dummy_data_file,
    })
}

/// Step 4.5: at least one level, no unknown keys, then each level's names and patterns.
fn build_outputs(
    action_id: &str,
    outputs_node: &Node,
    entries: &[(Node, Node)],
) -> Result<Levels, Failure> {
    let level_nodes: Vec<Option<&Node>> = Privacy::ALL
        .iter()
        .map(|privacy| yaml::get(entries, privacy.as_str()).filter(|n| !n.is_null()))
        .collect();
    if level_nodes.iter().all(Option::is_none) {
        return fail(
            "must specify at least one output of: highly_sensitive, moderately_sensitive, minimally_sensitive",
            Some(outputs_node),
        );
    }
    let known: Vec<&str> = Privacy::ALL.iter().map(|p| p.as_str()).collect();
    check_no_unexpected(
        entries,
        &known,
        &format!("`outputs` section for action {action_id}"),
    )?;
    let mut levels: Levels = [None, None, None];
    for ((privacy, node), slot) in Privacy::ALL.into_iter().zip(level_nodes).zip(&mut levels) {
        let Some(node) = node else { continue };
        let Some(outputs) = node.as_map() else {
            return fail(
                format!(
                    "`{}` section for action {action_id} must be a dictionary of key/value pairs",
                    privacy.as_str()
                ),
                Some(node),
            );
        };
        let mut level = Vec::with_capacity(outputs.len());
        for (name, pattern) in outputs {
            let output_id = name.key_text();
            let Some(pattern_text) = pattern.as_str() else {
                return fail(
                    format!("`{output_id}` output for action {action_id} must be a string"),
                    Some(pattern),
                );
            };
            if let Err(invalid) = glob::check_output_pattern(pattern_text, privacy) {
                return fail(
                    format!("Output path {pattern_text} is invalid: {invalid}"),
                    Some(pattern),
                );
            }
            level.push((output_id, pattern_text.to_owned()));
        }
        *slot = Some(level);
    }
    Ok(levels)
}

/// Step 4.6: a non-empty `run` whose first word has a valid tag.
fn parse_run(action_id: &str, raw: &str, node: &Node) -> Result<RunCommand, Failure> {
    let empty = || {
        fail(
            format!("run must have a value, {action_id} has an empty run key"),
            Some(node),
        )
    };
    if raw.is_empty() {
        return empty();
    }
    let parts = match command::split(raw) {
        Ok(parts) => parts,
        Err(error) => {
            // The reference raises a raw ValueError with shlex's text.
            let detail = match error {
                SplitError::NoClosingQuotation => "it has an unbalanced quote",
                SplitError::NoEscapedCharacter => "it ends with a lone backslash",
            };
            return fail(
                format!(
                    "`run` section for action {action_id} cannot be split into words: {detail} ({})",
                    error.as_str()
                ),
                Some(node),
            );
        }
    };
    let Some((first, rest)) = parts.split_first() else {
        // Only white space: the reference fails with an IndexError; we treat it as empty.
        return empty();
    };
    let (image, tag) = first.split_once(':').unwrap_or((first.as_str(), ""));
    if !command::is_valid_tag(tag) {
        return fail(
            format!(
                "Action command {image} must have a version specified in the form :vN (e.g. {image}:v2)"
            ),
            Some(node),
        );
    }
    Ok(RunCommand {
        image: image.to_owned(),
        tag: tag.to_owned(),
        args: rest.to_vec(),
        raw: raw.to_owned(),
    })
}

/// Step 10: the `expectations` rules for the version.
fn check_expectations(
    top: &[(Node, Node)],
    version: Version,
) -> Result<Option<Expectations>, Failure> {
    let node = yaml::get(top, "expectations").filter(|n| !n.is_null());
    if version.has(Feature::RemoveSupportForCohortExtractor) {
        if node.is_some() {
            return fail(
                "Project includes `expectations` section, which is not supported in this version. This section is only applicable to deprecated cohortextractor actions; you can safely remove it.",
                node,
            );
        }
        return Ok(None);
    }
    let Some(node) = node else {
        if version.has(Feature::ExpectationsPopulation) {
            return fail("Project must include `expectations` section", None);
        }
        return Ok(Some(Expectations {
            population_size: 1000,
        }));
    };
    if !version.has(Feature::ExpectationsPopulation) {
        // Versions up to 2 overwrite whatever the file says.
        return Ok(Some(Expectations {
            population_size: 1000,
        }));
    }
    let Some(entries) = node.as_map() else {
        return fail(
            "Project `expectations` section must be a dictionary of key/value pairs",
            Some(node),
        );
    };
    let Some(size_node) = yaml::get(entries, "population_size") else {
        return fail(
            "Project `expectations` section must include `population_size` section",
            Some(node),
        );
    };
    check_no_unexpected(
        entries,
        &["population_size"],
        "project `expectations` section",
    )?;
    let size = match &size_node.value {
        Value::Int(i) => i64::try_from(*i).ok(),
        Value::Bool(b) => Some(i64::from(*b)),
        Value::Float(f) if f.is_finite() && f.abs() < 9.2e18 => Some(f.trunc() as i64),
        Value::Str(s) => pytext::python_int_from_str(s),
        _ => None,
    };
    match size {
        Some(population_size) => Ok(Some(Expectations { population_size })),
        None => fail(
            "Project expectations population size must be a number",
            Some(size_node),
        ),
    }
}

/// `Unexpected parameters (<k1>, <k2>) in <place>`, keys in file order.
fn check_no_unexpected(
    entries: &[(Node, Node)],
    known: &[&str],
    place: &str,
) -> Result<(), Failure> {
    let unexpected: Vec<&Node> = entries
        .iter()
        .map(|(key, _)| key)
        .filter(|key| !key.as_str().is_some_and(|k| known.contains(&k)))
        .collect();
    if unexpected.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = unexpected.iter().map(|key| key.key_text()).collect();
    fail(
        format!("Unexpected parameters ({}) in {place}", names.join(", ")),
        unexpected.first().copied(),
    )
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "empty",
        Value::Bool(_) => "a boolean",
        Value::Int(_) | Value::Float(_) => "a number",
        Value::Str(_) => "a string",
        Value::Seq(_) => "a list",
        Value::Map(_) => "a dictionary",
    }
}
