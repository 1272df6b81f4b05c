//! Python's text conventions that the reference's messages and derived values depend on: `str()`
//! and `repr()` of YAML values, `float()` and `int()` of strings, and `json.dumps` (for
//! `--config`). Only what the crate needs, written from the behaviour, not the code.

use crate::yaml::{Node, Value};

/// Python's `str()` of a loaded YAML value (how a key or value appears in a message).
pub(crate) fn python_str(value: &Value) -> String {
    match value {
        Value::Str(s) => s.clone(),
        other => python_repr(other),
    }
}

/// A value as the reference's duplicate-key message prints it.
pub(crate) fn summary(value: &Value) -> String {
    python_str(value)
}

/// Python's `repr()` of a loaded YAML value.
pub(crate) fn python_repr(value: &Value) -> String {
    match value {
        Value::Null => "None".to_owned(),
        Value::Bool(true) => "True".to_owned(),
        Value::Bool(false) => "False".to_owned(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => float_repr(*f),
        Value::Str(s) => string_repr(s),
        Value::Seq(items) => {
            let inner: Vec<String> = items.iter().map(|n| python_repr(&n.value)).collect();
            format!("[{}]", inner.join(", "))
        }
        Value::Map(entries) => {
            let inner: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{}: {}", python_repr(&k.value), python_repr(&v.value)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
    }
}

fn string_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's `repr()` of a float: the shortest round-trip digits, fixed notation for decimal
/// exponents from -4 to 15, scientific otherwise, and always a `.0` on integral fixed values.
pub(crate) fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.to_owned();
    }
    // Python's repr gives the shortest digits that read back as the same float and, among
    // those, the closest to its exact value. Rust's `{:e}` gives the shortest length but not
    // always the closest digits, so redo that length with exact, correctly rounded formatting.
    let shortest = format!("{:e}", f.abs());
    let n_digits = shortest
        .split_once('e')
        .map_or(shortest.as_str(), |(mantissa, _)| mantissa)
        .chars()
        .filter(char::is_ascii_digit)
        .count();
    let closest = format!("{:.*e}", n_digits.saturating_sub(1), f.abs());
    let scientific = if closest.parse::<f64>().ok() == Some(f.abs()) {
        closest
    } else {
        shortest
    };
    let (mantissa, exponent) = match scientific.split_once('e') {
        Some(pair) => pair,
        None => (scientific.as_str(), "0"),
    };
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let sign = if f < 0.0 { "-" } else { "" };
    if (-4..16).contains(&exponent) {
        let n_digits = digits.len() as i32;
        let point = exponent + 1; // digits before the decimal point
        let body = if point <= 0 {
            format!("0.{}{}", "0".repeat((-point) as usize), digits)
        } else if point >= n_digits {
            format!("{}{}.0", digits, "0".repeat((point - n_digits) as usize))
        } else {
            let (whole, frac) = digits.split_at(point as usize);
            format!("{whole}.{frac}")
        };
        format!("{sign}{body}")
    } else {
        let (first, rest) = digits.split_at(1);
        let mantissa = if rest.is_empty() {
            first.to_owned()
        } else {
            format!("{first}.{rest}")
        };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        format!("{sign}{mantissa}e{exp_sign}{:02}", exponent.abs())
    }
}

/// Python's `str.isspace()` for one character: Unicode white space plus the four ASCII
/// separators (`\x1c`..`\x1f`) Python also counts.
pub(crate) fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Digits with single underscores between them, as Python's numeric literals allow in `float()`
/// and `int()`. Returns the digits without underscores.
fn digit_run(s: &str) -> Option<String> {
    if s.is_empty() || s.starts_with('_') || s.ends_with('_') || s.contains("__") {
        return None;
    }
    if !s.chars().all(|c| c.is_ascii_digit() || c == '_') {
        return None;
    }
    Some(s.chars().filter(|c| *c != '_').collect())
}

/// Python's `float(text)`, or `None` where Python raises `ValueError`.
pub(crate) fn python_float_from_str(text: &str) -> Option<f64> {
    let s = text.trim_matches(is_python_space);
    let (sign, body) = match s.strip_prefix('-') {
        Some(rest) => (-1.0, rest),
        None => (1.0, s.strip_prefix('+').unwrap_or(s)),
    };
    let lower = body.to_ascii_lowercase();
    match lower.as_str() {
        "inf" | "infinity" => return Some(sign * f64::INFINITY),
        "nan" => return Some(f64::NAN),
        _ => {}
    }
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let mantissa_clean = match mantissa.split_once('.') {
        Some((whole, frac)) => {
            let whole = if whole.is_empty() {
                String::new()
            } else {
                digit_run(whole)?
            };
            let frac = if frac.is_empty() {
                String::new()
            } else {
                digit_run(frac)?
            };
            if whole.is_empty() && frac.is_empty() {
                return None;
            }
            format!("{}.{}", if whole.is_empty() { "0" } else { &whole }, frac)
        }
        None => digit_run(mantissa)?,
    };
    let exponent_clean = match exponent {
        None => String::new(),
        Some(exp) => {
            let (exp_sign, digits) = match exp.strip_prefix('-') {
                Some(rest) => ("-", rest),
                None => ("", exp.strip_prefix('+').unwrap_or(exp)),
            };
            format!("e{exp_sign}{}", digit_run(digits)?)
        }
    };
    let parsed: f64 = format!("{mantissa_clean}{exponent_clean}").parse().ok()?;
    Some(sign * parsed)
}

/// Python's `int(text)` for a string, or `None` where Python raises `ValueError` (or the value
/// does not fit in an `i64`).
pub(crate) fn python_int_from_str(text: &str) -> Option<i64> {
    let s = text.trim_matches(is_python_space);
    let (negative, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let digits = digit_run(body)?;
    let magnitude: i128 = digits.parse().ok()?;
    let value = if negative { -magnitude } else { magnitude };
    i64::try_from(value).ok()
}

/// `json.dumps(value)` with Python's defaults: `", "` and `": "` separators, non-ASCII escaped as
/// `\uXXXX`, `NaN`/`Infinity` for non-finite floats, and non-string keys turned into strings.
pub(crate) fn json_dumps(node: &Node) -> String {
    let mut out = String::new();
    write_json(&node.value, &mut out);
    out
}

fn write_json(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Int(i) => out.push_str(&i.to_string()),
        Value::Float(f) => out.push_str(&json_float(*f)),
        Value::Str(s) => write_json_string(s, out),
        Value::Seq(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_json(&item.value, out);
            }
            out.push(']');
        }
        Value::Map(entries) => {
            out.push('{');
            for (i, (key, item)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                let key_text = match &key.value {
                    Value::Str(s) => s.clone(),
                    Value::Float(f) => json_float(*f),
                    Value::Null => "null".to_owned(),
                    Value::Bool(b) => b.to_string(),
                    Value::Int(i) => i.to_string(),
                    // Collection keys are refused by the YAML layer; write their repr if one slips by.
                    other => python_repr(other),
                };
                write_json_string(&key_text, out);
                out.push_str(": ");
                write_json(&item.value, out);
            }
            out.push('}');
        }
    }
}

fn json_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".to_owned()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned()
    } else {
        float_repr(f)
    }
}

fn write_json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7f => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_repr_matches_python() {
        let cases = [
            (5.0, "5.0"),
            (4.5, "4.5"),
            (6.0, "6.0"),
            (-1.0, "-1.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1e16, "1e+16"),
            (1.2345e20, "1.2345e+20"),
            (123456789012345.0, "123456789012345.0"),
            (0.1, "0.1"),
            // Rust's shortest digits here end in 3; Python's closest shortest end in 2.
            (71848888186297.12, "71848888186297.12"),
            (f64::INFINITY, "inf"),
        ];
        for (f, expected) in cases {
            assert_eq!(float_repr(f), expected, "{f}");
        }
    }

    #[test]
    fn python_float_accepts_what_python_accepts() {
        assert_eq!(python_float_from_str(" 4.0 "), Some(4.0));
        assert_eq!(python_float_from_str("1_0"), Some(10.0));
        assert_eq!(python_float_from_str(".5"), Some(0.5));
        assert_eq!(python_float_from_str("5."), Some(5.0));
        assert_eq!(python_float_from_str("-1e3"), Some(-1000.0));
        assert_eq!(python_float_from_str("Infinity"), Some(f64::INFINITY));
        assert_eq!(python_float_from_str("asdf"), None);
        assert_eq!(python_float_from_str("1__0"), None);
        assert_eq!(python_float_from_str("."), None);
        assert_eq!(python_float_from_str(""), None);
        assert_eq!(python_float_from_str("0x10"), None);
    }

    #[test]
    fn python_int_accepts_what_python_accepts() {
        assert_eq!(python_int_from_str(" 5 "), Some(5));
        assert_eq!(python_int_from_str("1_000"), Some(1000));
        assert_eq!(python_int_from_str("-3"), Some(-3));
        assert_eq!(python_int_from_str("5.0"), None);
        assert_eq!(python_int_from_str(""), None);
    }
}
