//! Python's POSIX path semantics that the output rules depend on: `PurePosixPath` (name, suffix,
//! parent), `posixpath.normpath`, and `fnmatch.fnmatch` (used by the ehrQL `--output` rule, where
//! unlike our own glob a `*` crosses `/`).

use std::fmt;

/// A path split the way Python's `PurePosixPath` splits it: `//` collapsed, `.` components
/// dropped, a trailing `/` ignored, and a leading `//` (exactly two) kept as its own root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PurePosixPath {
    root: &'static str,
    parts: Vec<String>,
}

impl PurePosixPath {
    pub(crate) fn new(text: &str) -> Self {
        let root = if text.starts_with("//") && !text.starts_with("///") {
            "//"
        } else if text.starts_with('/') {
            "/"
        } else {
            ""
        };
        let parts = text
            .split('/')
            .filter(|part| !part.is_empty() && *part != ".")
            .map(str::to_owned)
            .collect();
        Self { root, parts }
    }

    /// The final component, or `""` for a bare root or an empty path.
    pub(crate) fn name(&self) -> &str {
        self.parts.last().map_or("", String::as_str)
    }

    /// The path without its final component (`.` for a single relative component).
    pub(crate) fn parent(&self) -> PurePosixPath {
        let mut parts = self.parts.clone();
        parts.pop();
        PurePosixPath {
            root: self.root,
            parts,
        }
    }

    /// The path with its final component replaced. A name of `.` would be refused by Python
    /// (`ValueError`); it leaves just the parent here, which is what `.` would mean.
    pub(crate) fn with_name(&self, name: &str) -> PurePosixPath {
        let mut path = self.parent();
        if name != "." && !name.is_empty() {
            path.parts.push(name.to_owned());
        }
        path
    }
}

impl fmt::Display for PurePosixPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.root.is_empty() && self.parts.is_empty() {
            return f.write_str(".");
        }
        write!(f, "{}{}", self.root, self.parts.join("/"))
    }
}

/// `PurePosixPath(path).suffix` without building the path: the suffix of the last component
/// that is neither empty nor `.`.
pub(crate) fn suffix_of(path: &str) -> &str {
    let name = path
        .rsplit('/')
        .find(|part| !part.is_empty() && *part != ".")
        .unwrap_or("");
    match name.rfind('.') {
        Some(i) if i > 0 && i < name.len() - 1 => &name[i..],
        _ => "",
    }
}

/// Python's `posixpath.normpath`: collapse `//` and `.`, resolve `..` against earlier components
/// where possible, keep a leading `//` (exactly two), and give `.` for an empty result.
pub(crate) fn normpath(path: &str) -> String {
    if path.is_empty() {
        return ".".to_owned();
    }
    let initial_slashes = if path.starts_with("//") && !path.starts_with("///") {
        2
    } else if path.starts_with('/') {
        1
    } else {
        0
    };
    let mut components: Vec<&str> = Vec::new();
    for component in path.split('/') {
        if component.is_empty() || component == "." {
            continue;
        }
        let keep = component != ".."
            || (initial_slashes == 0 && components.is_empty())
            || components.last() == Some(&"..");
        if keep {
            components.push(component);
        } else if !components.is_empty() {
            components.pop();
        }
    }
    let normal = format!("{}{}", "/".repeat(initial_slashes), components.join("/"));
    if normal.is_empty() {
        ".".to_owned()
    } else {
        normal
    }
}

/// One token of an `fnmatch` pattern.
#[derive(Clone, Debug, PartialEq)]
enum Token {
    Star,
    AnyChar,
    Literal(char),
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    Never,
}

/// Python's `fnmatch.fnmatch(name, pattern)` on POSIX: `*` matches any run of characters (`/`
/// included), `?` any one character, `[...]` a class (`!` negates, ranges with `-`, an empty
/// range matches nothing); an unclosed `[` is literal.
pub(crate) fn fnmatch(name: &str, pattern: &str) -> bool {
    let tokens = translate(pattern);
    let text: Vec<char> = name.chars().collect();
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < tokens.len() && tokens[p] == Token::Star {
            star = Some((p, t));
            p += 1;
        } else if p < tokens.len() && token_matches(&tokens[p], text[t]) {
            p += 1;
            t += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    tokens[p..].iter().all(|token| *token == Token::Star)
}

fn token_matches(token: &Token, c: char) -> bool {
    match token {
        Token::Star => true,
        Token::AnyChar => true,
        Token::Literal(l) => *l == c,
        Token::Class { negated, ranges } => {
            ranges.iter().any(|(lo, hi)| *lo <= c && c <= *hi) != *negated
        }
        Token::Never => false,
    }
}

fn translate(pattern: &str) -> Vec<Token> {
    let chars: Vec<char> = pattern.chars().collect();
    let n = chars.len();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < n {
        let c = chars[i];
        i += 1;
        match c {
            '*' => {
                if tokens.last() != Some(&Token::Star) {
                    tokens.push(Token::Star);
                }
            }
            '?' => tokens.push(Token::AnyChar),
            '[' => {
                let mut j = i;
                if j < n && chars[j] == '!' {
                    j += 1;
                }
                if j < n && chars[j] == ']' {
                    j += 1;
                }
                while j < n && chars[j] != ']' {
                    j += 1;
                }
                if j >= n {
                    tokens.push(Token::Literal('['));
                } else {
                    tokens.push(class_token(&chars[i..j]));
                    i = j + 1;
                }
            }
            other => tokens.push(Token::Literal(other)),
        }
    }
    tokens
}

/// Builds a class from the characters between `[` and `]`, splitting on hyphens as Python's
/// `fnmatch.translate` does: the character before a separating `-` and the one after it form a
/// range; a range running backwards is dropped with its two ends.
fn class_token(body: &[char]) -> Token {
    let (negated, body) = match body.first() {
        Some('!') => (true, &body[1..]),
        _ => (false, body),
    };
    // Chunks between separating hyphens; the first hyphen may not be the class's first character.
    let mut chunks: Vec<Vec<char>> = Vec::new();
    let mut start = 0;
    let mut k = 1;
    loop {
        let found = (k..body.len()).find(|&idx| body[idx] == '-');
        let Some(hyphen) = found else { break };
        chunks.push(body[start..hyphen].to_vec());
        start = hyphen + 1;
        k = hyphen + 3;
    }
    let last = body[start.min(body.len())..].to_vec();
    if !last.is_empty() {
        chunks.push(last);
    } else if let Some(previous) = chunks.last_mut() {
        previous.push('-');
    } else {
        chunks.push(Vec::new());
    }
    for idx in (1..chunks.len()).rev() {
        let (Some(&lo), Some(&hi)) = (chunks[idx - 1].last(), chunks[idx].first()) else {
            continue;
        };
        if lo > hi {
            let tail: Vec<char> = chunks[idx][1..].to_vec();
            chunks[idx - 1].pop();
            chunks[idx - 1].extend(tail);
            chunks.remove(idx);
        }
    }
    let mut ranges = Vec::new();
    for (idx, chunk) in chunks.iter().enumerate() {
        let mut chars: &[char] = chunk;
        // The first character of a later chunk closes a range opened by the previous chunk.
        if idx > 0 {
            if let (Some(&lo), Some(&hi)) = (chunks[idx - 1].last(), chunk.first()) {
                ranges.pop();
                ranges.push((lo, hi));
            }
            chars = chars.get(1..).unwrap_or(&[]);
        }
        ranges.extend(chars.iter().map(|&c| (c, c)));
    }
    if ranges.is_empty() {
        // `[!]` matches any character; an empty class matches nothing.
        return if negated {
            Token::AnyChar
        } else {
            Token::Never
        };
    }
    Token::Class { negated, ranges }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pure_posix_path_matches_python() {
        let path = PurePosixPath::new("output//tables/./x.csv.gz/");
        assert_eq!(path.to_string(), "output/tables/x.csv.gz");
        assert_eq!(path.name(), "x.csv.gz");
        assert_eq!(suffix_of("output//tables/./x.csv.gz/"), ".gz");
        assert_eq!(path.parent().to_string(), "output/tables");
        assert_eq!(PurePosixPath::new("a.csv").parent().to_string(), ".");
        assert_eq!(suffix_of(".csv"), "");
        assert_eq!(suffix_of("a."), "");
        assert_eq!(suffix_of(".."), "");
        assert_eq!(suffix_of("a/./"), "");
        assert_eq!(suffix_of("x/.y.txt"), ".txt");
        assert_eq!(suffix_of("a.csv/."), ".csv");
        assert_eq!(PurePosixPath::new("//x/y").to_string(), "//x/y");
        assert_eq!(PurePosixPath::new("///x").to_string(), "/x");
        assert_eq!(PurePosixPath::new("").to_string(), ".");
    }

    #[test]
    fn normpath_matches_python() {
        let cases = [
            ("", "."),
            ("a//b", "a/b"),
            ("a/./b", "a/b"),
            ("a/../b", "b"),
            ("../a", "../a"),
            ("a/../../b", "../b"),
            ("/../a", "/a"),
            ("//a", "//a"),
            ("///a", "/a"),
            ("a/", "a"),
            ("a/.", "a"),
            ("output/a.csv", "output/a.csv"),
        ];
        for (input, expected) in cases {
            assert_eq!(normpath(input), expected, "{input}");
        }
    }

    #[test]
    fn fnmatch_matches_python() {
        assert!(fnmatch("output/tables/a.arrow", "output/tables/*.arrow"));
        assert!(fnmatch(
            "output/tables/sub/a.arrow",
            "output/tables/*.arrow"
        ));
        assert!(fnmatch("output/tables/*.arrow", "output/tables/*.arrow"));
        assert!(!fnmatch("output/tables/a.csv", "output/tables/*.arrow"));
        assert!(fnmatch("ab", "a?"));
        assert!(fnmatch("a1", "a[0-9]"));
        assert!(!fnmatch("ax", "a[0-9]"));
        assert!(fnmatch("ax", "a[!0-9]"));
        assert!(fnmatch("a-", "a[x-]"));
        assert!(!fnmatch("ab", "a[z-a]"));
        assert!(fnmatch("a[", "a["));
        assert!(fnmatch("a]", "a[]]"));
    }
}
