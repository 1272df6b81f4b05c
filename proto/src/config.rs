//! Service configuration files: a TOML file read into a service's own `serde` type, after
//! environment variables named by the service have overridden keys of the file. Each service
//! lists its overrides ([`EnvOverride`]: variable, dotted key, kind of value) and keeps its own
//! rules; this module owns reading, overriding and the messages for those steps.
//!
//! A variable's text is read by the kind of its key ([`ValueKind`]): text as it is, lists
//! comma-separated, whole numbers, and booleans (`true`, `1`, `yes`, `on` or `false`, `0`,
//! `no`, `off`, empty; any case). A value of the wrong kind is refused naming the variable, so
//! a typo never silently becomes a default.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// How an environment variable's text becomes the value of its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    /// The text as it is.
    Text,
    /// The text as it is; empty unsets the key, so its default applies.
    OptionalText,
    /// Comma-separated items, each trimmed; empty items are dropped.
    List,
    /// A whole number.
    Integer,
    /// `true`, `1`, `yes`, `on` or `false`, `0`, `no`, `off`, empty; any case.
    Boolean,
}

/// An environment variable that overrides a key of the configuration file.
#[derive(Clone, Copy, Debug)]
pub struct EnvOverride {
    /// The variable, e.g. `RAP_AGENT_WORK_DIR`.
    pub var: &'static str,
    /// The key it replaces, dotted for a key in a table, e.g. `controller.endpoint`.
    pub key: &'static str,
    /// How its text is read.
    pub kind: ValueKind,
}

impl EnvOverride {
    /// The variable `var` overriding `key` with a value of `kind`.
    pub const fn new(var: &'static str, key: &'static str, kind: ValueKind) -> EnvOverride {
        EnvOverride { var, key, kind }
    }

    /// The variable `var` overriding `key` with its text as it is ([`ValueKind::Text`]).
    pub const fn text(var: &'static str, key: &'static str) -> EnvOverride {
        EnvOverride::new(var, key, ValueKind::Text)
    }
}

/// A configuration file that cannot be read, or an override or key that does not fit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not TOML, or a key (from the file or an override) is unknown, missing or
    /// of the wrong type.
    #[error("parsing {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, naming the key and, for the file's own text, the line.
        message: String,
    },
    /// An environment variable's text is not of its key's kind.
    #[error("environment variable {var}: {value:?} is not {expected}")]
    Env {
        /// The variable.
        var: &'static str,
        /// Its text.
        value: String,
        /// What it should hold: `a whole number` or `true or false`.
        expected: &'static str,
    },
}

/// Reads the TOML file at `path`, applies `overrides` whose variables `env` finds (the
/// process environment in a service; a map in tests), and deserializes the result.
///
/// # Errors
/// The file cannot be read ([`ConfigFileError::Read`]), an override's text is not of its kind
/// ([`ConfigFileError::Env`]), or the TOML does not fit `T` ([`ConfigFileError::Parse`]).
pub fn load<T: DeserializeOwned>(
    path: &Path,
    overrides: &[EnvOverride],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<T, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path, overrides, env)
}

/// [`load`] with the file's `text` already read from `path` (named in messages).
///
/// # Errors
/// As [`load`], except reading.
pub fn parse<T: DeserializeOwned>(
    text: &str,
    path: &Path,
    overrides: &[EnvOverride],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<T, ConfigFileError> {
    let parse_error = |error: toml::de::Error| ConfigFileError::Parse {
        path: path.to_owned(),
        message: error.to_string().trim_end().to_owned(),
    };
    let mut table: toml::Table = text.parse().map_err(parse_error)?;
    for entry in overrides {
        let Some(text) = env(entry.var) else {
            continue;
        };
        match override_value(entry, text)? {
            Some(value) => set(&mut table, entry.key, value),
            None => unset(&mut table, entry.key),
        }
    }
    toml::Value::Table(table).try_into().map_err(parse_error)
}

/// The value `text` gives `entry`'s key; `None` unsets it.
fn override_value(
    entry: &EnvOverride,
    text: String,
) -> Result<Option<toml::Value>, ConfigFileError> {
    let refuse = |expected| ConfigFileError::Env {
        var: entry.var,
        value: text.clone(),
        expected,
    };
    let value = match entry.kind {
        ValueKind::Text => toml::Value::String(text),
        ValueKind::OptionalText if text.is_empty() => return Ok(None),
        ValueKind::OptionalText => toml::Value::String(text),
        ValueKind::List => toml::Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| toml::Value::String(item.to_owned()))
                .collect(),
        ),
        ValueKind::Integer => match text.trim().parse() {
            Ok(number) => toml::Value::Integer(number),
            Err(_) => return Err(refuse("a whole number")),
        },
        ValueKind::Boolean => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => toml::Value::Boolean(true),
            "false" | "0" | "no" | "off" | "" => toml::Value::Boolean(false),
            _ => return Err(refuse("true or false")),
        },
    };
    Ok(Some(value))
}

/// Puts `value` at the dotted key, making (or replacing with) tables on the way.
fn set(table: &mut toml::Table, dotted: &str, value: toml::Value) {
    let (parents, last) = match dotted.rsplit_once('.') {
        Some((parents, last)) => (Some(parents), last),
        None => (None, dotted),
    };
    let mut current = table;
    for part in parents.into_iter().flat_map(|parents| parents.split('.')) {
        let entry = current
            .entry(part.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        current = match entry {
            toml::Value::Table(next) => next,
            // Made a table just above.
            _ => return,
        };
    }
    current.insert(last.to_owned(), value);
}

/// Removes the dotted key, if it is there.
fn unset(table: &mut toml::Table, dotted: &str) {
    let mut current = table;
    let mut parts = dotted.split('.').peekable();
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            current.remove(part);
            return;
        }
        current = match current.get_mut(part) {
            Some(toml::Value::Table(next)) => next,
            _ => return,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Example {
        name: String,
        #[serde(default)]
        proxy: Option<String>,
        #[serde(default)]
        count: u32,
        #[serde(default)]
        enabled: bool,
        #[serde(default)]
        server: Server,
    }

    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Server {
        #[serde(default)]
        endpoint: String,
        #[serde(default)]
        images: Vec<String>,
    }

    const OVERRIDES: [EnvOverride; 6] = [
        EnvOverride::text("EX_NAME", "name"),
        EnvOverride::new("EX_PROXY", "proxy", ValueKind::OptionalText),
        EnvOverride::new("EX_COUNT", "count", ValueKind::Integer),
        EnvOverride::new("EX_ENABLED", "enabled", ValueKind::Boolean),
        EnvOverride::text("EX_ENDPOINT", "server.endpoint"),
        EnvOverride::new("EX_IMAGES", "server.images", ValueKind::List),
    ];

    const FILE: &str = "name = \"file\"\nproxy = \"https://proxy\"\ncount = 1\n";

    fn parse_with(text: &str, env: &[(&str, &str)]) -> Result<Example, ConfigFileError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(var, value)| (var.to_string(), value.to_string()))
            .collect();
        parse(text, Path::new("ex.toml"), &OVERRIDES, &|var| {
            env.iter()
                .find(|(name, _)| name == var)
                .map(|(_, value)| value.clone())
        })
    }

    #[test]
    fn the_file_holds_unless_a_variable_overrides_a_key() {
        let example = parse_with(FILE, &[]).unwrap();
        assert_eq!(example.name, "file");
        assert_eq!(example.proxy.as_deref(), Some("https://proxy"));
        assert_eq!(example.count, 1);

        let example = parse_with(
            FILE,
            &[
                ("EX_NAME", "env"),
                ("EX_COUNT", " 7 "),
                ("EX_ENABLED", "Yes"),
                ("EX_ENDPOINT", "https://controller:1"),
                ("EX_IMAGES", "python, r ,,ehrql"),
            ],
        )
        .unwrap();
        assert_eq!(example.name, "env");
        assert_eq!(example.count, 7);
        assert!(example.enabled);
        // A key of a table the file does not have: the table is made.
        assert_eq!(example.server.endpoint, "https://controller:1");
        assert_eq!(example.server.images, ["python", "r", "ehrql"]);
    }

    #[test]
    fn booleans_take_the_usual_words_in_any_case() {
        for (text, expected) in [
            ("true", true),
            ("1", true),
            ("YES", true),
            ("on", true),
            ("false", false),
            ("0", false),
            ("No", false),
            ("off", false),
            ("", false),
        ] {
            let example = parse_with(FILE, &[("EX_ENABLED", text)]).unwrap();
            assert_eq!(example.enabled, expected, "{text:?}");
        }
    }

    #[test]
    fn an_empty_optional_text_unsets_its_key() {
        let example = parse_with(FILE, &[("EX_PROXY", "")]).unwrap();
        assert_eq!(example.proxy, None);
        // Plain text keeps the empty string.
        let example = parse_with(FILE, &[("EX_NAME", "")]).unwrap();
        assert_eq!(example.name, "");
    }

    #[test]
    fn mistakes_name_the_variable_file_or_key() {
        let error = parse_with(FILE, &[("EX_COUNT", "many")]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "environment variable EX_COUNT: \"many\" is not a whole number"
        );
        let error = parse_with(FILE, &[("EX_ENABLED", "maybe")]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "environment variable EX_ENABLED: \"maybe\" is not true or false"
        );
        let error = parse_with(&format!("{FILE}bogus = 1\n"), &[]).unwrap_err();
        let message = error.to_string();
        assert!(message.starts_with("parsing ex.toml: "), "{message}");
        assert!(message.contains("bogus"), "{message}");
        let error = parse_with("count = 1\n", &[]).unwrap_err();
        assert!(error.to_string().contains("name"), "{error}");
        let error = parse_with("name = [", &[]).unwrap_err();
        assert!(matches!(error, ConfigFileError::Parse { .. }), "{error}");
        // A whole number out of the key's range is the key's type error.
        let error = parse_with(FILE, &[("EX_COUNT", "-1")]).unwrap_err();
        assert!(
            error.to_string().starts_with("parsing ex.toml: "),
            "{error}"
        );

        let missing = Path::new("/nonexistent/ex.toml");
        let error = load::<Example>(missing, &OVERRIDES, &|_| None).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("reading /nonexistent/ex.toml: "),
            "{error}"
        );
    }
}
