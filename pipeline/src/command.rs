//! The `run` string: POSIX shell-style splitting and quoting (Python's `shlex.split`/`shlex.join`
//! rules, spec §1.4), the image tag rule, and the command patterns that switch on the
//! cohortextractor and ehrQL output rules (spec §1.8 steps 8 and 9).

use crate::pytext::is_python_space;

/// Why a `run` string could not be split. The texts are `shlex`'s own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SplitError {
    NoClosingQuotation,
    NoEscapedCharacter,
}

impl SplitError {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SplitError::NoClosingQuotation => "No closing quotation",
            SplitError::NoEscapedCharacter => "No escaped character",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Between,
    Word,
    Quote(char),
    Escape(Return),
}

/// Where an escape returns to: outside quotes, or inside double quotes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Return {
    Word,
    DoubleQuote,
}

fn is_shlex_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Splits like Python's `shlex.split(text)` (POSIX mode, no comments): whitespace separates words;
/// single quotes keep everything; double quotes keep everything but let a backslash escape `"` and
/// `\`; outside quotes a backslash escapes any character; an empty quoted string is a word.
pub(crate) fn split(text: &str) -> Result<Vec<String>, SplitError> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut state = State::Between;
    for c in text.chars() {
        state = match state {
            State::Between | State::Word => {
                if is_shlex_space(c) {
                    if state == State::Word {
                        words.push(std::mem::take(&mut word));
                    }
                    State::Between
                } else if c == '\\' {
                    State::Escape(Return::Word)
                } else if c == '\'' || c == '"' {
                    State::Quote(c)
                } else {
                    word.push(c);
                    State::Word
                }
            }
            State::Quote(quote) => {
                if c == quote {
                    State::Word
                } else if quote == '"' && c == '\\' {
                    State::Escape(Return::DoubleQuote)
                } else {
                    word.push(c);
                    State::Quote(quote)
                }
            }
            State::Escape(back) => {
                // Inside double quotes a backslash only escapes `"` and itself.
                if back == Return::DoubleQuote && c != '\\' && c != '"' {
                    word.push('\\');
                }
                word.push(c);
                match back {
                    Return::Word => State::Word,
                    Return::DoubleQuote => State::Quote('"'),
                }
            }
        };
    }
    match state {
        State::Quote(_) => Err(SplitError::NoClosingQuotation),
        State::Escape(_) => Err(SplitError::NoEscapedCharacter),
        State::Word => {
            words.push(word);
            Ok(words)
        }
        State::Between => Ok(words),
    }
}

/// Quotes one word like Python's `shlex.quote`: unchanged when it holds only `[A-Za-z0-9_@%+=:,./-]`,
/// `''` when empty, otherwise single-quoted with each `'` written as `'"'"'`.
pub(crate) fn quote(word: &str) -> String {
    if word.is_empty() {
        return "''".to_owned();
    }
    let safe = word
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c));
    if safe {
        return word.to_owned();
    }
    format!("'{}'", word.replace('\'', "'\"'\"'"))
}

/// Joins words like Python's `shlex.join`.
pub(crate) fn join(words: &[String]) -> String {
    words
        .iter()
        .map(|word| quote(word))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The image tag rule: `v` then digits and dots (optionally `-pre`), or `dev`, or `latest`.
///
/// Deliberately stricter than the reference's regex in two corners: digits are ASCII only (Python's
/// `\d` also takes other scripts' digits) and a trailing newline is not ignored (Python's `$`
/// allows one).
pub(crate) fn is_valid_tag(tag: &str) -> bool {
    if tag == "dev" || tag == "latest" {
        return true;
    }
    let Some(rest) = tag.strip_prefix('v') else {
        return false;
    };
    let number = rest.strip_suffix("-pre").unwrap_or(rest);
    !number.is_empty() && number.chars().all(|c| c.is_ascii_digit() || c == '.')
}

/// Whether the raw `run` string starts `<image>:<non-space tag> <command>` for one of `images`,
/// with exactly one space before `command` and `command` matched as a prefix. This mirrors the
/// reference's `re.match(r"image:\S+ command", raw)` tests, two spaces defeating them included.
pub(crate) fn raw_matches(raw: &str, images: &[&str], commands: &[&str]) -> bool {
    for image in images {
        let Some(rest) = raw.strip_prefix(image).and_then(|r| r.strip_prefix(':')) else {
            continue;
        };
        let tag_len: usize = rest
            .chars()
            .take_while(|c| !is_python_space(*c))
            .map(char::len_utf8)
            .sum();
        if tag_len == 0 {
            continue;
        }
        let Some(after) = rest[tag_len..].strip_prefix(' ') else {
            continue;
        };
        if commands.iter().any(|command| after.starts_with(command)) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        split(text).unwrap()
    }

    #[test]
    fn split_follows_posix_shell_rules() {
        assert_eq!(words("python:v2 a.py  b"), ["python:v2", "a.py", "b"]);
        assert_eq!(words("a 'b c' \"d e\""), ["a", "b c", "d e"]);
        assert_eq!(words("a''"), ["a"]);
        assert_eq!(words("a '' b"), ["a", "", "b"]);
        assert_eq!(
            words(r#"a\ b "c\"d" "e\f" 'g\h'"#),
            ["a b", "c\"d", "e\\f", "g\\h"]
        );
        assert_eq!(words("x\"y z\"w"), ["xy zw"]);
        assert_eq!(words("  "), Vec::<String>::new());
        assert_eq!(split("a 'b"), Err(SplitError::NoClosingQuotation));
        assert_eq!(split("a \\"), Err(SplitError::NoEscapedCharacter));
    }

    #[test]
    fn quote_and_join_follow_shlex() {
        assert_eq!(quote("output/a.csv"), "output/a.csv");
        assert_eq!(quote("--config"), "--config");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\"'\"'s'");
        assert_eq!(join(&["a".into(), "{\"x\": 1}".into()]), "a '{\"x\": 1}'");
    }

    #[test]
    fn tags_follow_the_reference_rule() {
        for tag in [
            "v1", "v2", "v1.2", "v1.2.3", "v1-pre", "v1.2-pre", "dev", "latest", "v0.0.30",
        ] {
            assert!(is_valid_tag(tag), "{tag}");
        }
        for tag in [
            "",
            "v",
            "other",
            "vnotdigits",
            "v1x1",
            "pre",
            "3.11",
            "v-pre",
            "v1-pre-pre",
        ] {
            assert!(!is_valid_tag(tag), "{tag}");
        }
    }

    #[test]
    fn raw_matches_needs_exactly_one_space() {
        let ehrql = (
            &["ehrql", "databuilder"][..],
            &["generate-dataset", "generate_dataset"][..],
        );
        assert!(raw_matches("ehrql:v1 generate-dataset x", ehrql.0, ehrql.1));
        assert!(raw_matches(
            "databuilder:v0 generate_dataset",
            ehrql.0,
            ehrql.1
        ));
        assert!(!raw_matches(
            "ehrql:v1  generate-dataset x",
            ehrql.0,
            ehrql.1
        ));
        assert!(!raw_matches(
            "ehrql:v1\tgenerate-dataset x",
            ehrql.0,
            ehrql.1
        ));
        assert!(!raw_matches("ehrql: generate-dataset", ehrql.0, ehrql.1));
        assert!(!raw_matches("ehrqlx:v1 generate-dataset", ehrql.0, ehrql.1));
    }
}
