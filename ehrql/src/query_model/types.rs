//! Value types and values of the query model (spec §2.1): primitives, one code type per coding
//! system, multi-code strings, and sets of values.
//!
//! Equality is strict about type (`1 ≠ true ≠ 1.0`), as in ehrQL. Floats are compared by their
//! bits for hashing and with `total_cmp` for ordering, so values can key maps.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use super::date::Date;

/// A coding system: each is its own type, and codes of different systems never compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CodeSystem {
    /// `SNOMEDCTCode`
    SnomedCt,
    /// `CTV3Code`
    Ctv3,
    /// `ICD10Code`
    Icd10,
    /// `OPCS4Code`
    Opcs4,
    /// `DMDCode`
    Dmd,
    /// `BNFCode`
    Bnf,
}

impl CodeSystem {
    /// All coding systems.
    pub const ALL: [CodeSystem; 6] = [
        CodeSystem::SnomedCt,
        CodeSystem::Ctv3,
        CodeSystem::Icd10,
        CodeSystem::Opcs4,
        CodeSystem::Dmd,
        CodeSystem::Bnf,
    ];

    /// ehrQL's class name, as used in the serializer JSON.
    pub fn class_name(self) -> &'static str {
        match self {
            CodeSystem::SnomedCt => "SNOMEDCTCode",
            CodeSystem::Ctv3 => "CTV3Code",
            CodeSystem::Icd10 => "ICD10Code",
            CodeSystem::Opcs4 => "OPCS4Code",
            CodeSystem::Dmd => "DMDCode",
            CodeSystem::Bnf => "BNFCode",
        }
    }

    /// The system with this class name.
    pub fn from_class_name(name: &str) -> Option<CodeSystem> {
        CodeSystem::ALL.into_iter().find(|c| c.class_name() == name)
    }

    /// Whether `code` has this system's shape (ehrQL checks a regex per system).
    pub fn is_valid(self, code: &str) -> bool {
        let b = code.as_bytes();
        let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
        match self {
            // [1-9][0-9]{5,17}
            CodeSystem::SnomedCt | CodeSystem::Dmd => {
                (6..=18).contains(&b.len()) && b[0] != b'0' && digits(b)
            }
            // [0-9a-zA-Z.]{5}
            CodeSystem::Ctv3 => {
                b.len() == 5 && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'.')
            }
            // [A-Z][0-9]{2,3} (ICD-10 may end in X: [A-Z][0-9]{2}X? is not used by the reference)
            CodeSystem::Icd10 | CodeSystem::Opcs4 => {
                (3..=4).contains(&b.len()) && b[0].is_ascii_uppercase() && digits(&b[1..])
            }
            // BNF codes are alphanumeric, up to 15 characters.
            CodeSystem::Bnf => {
                !b.is_empty() && b.len() <= 15 && b.iter().all(u8::is_ascii_alphanumeric)
            }
        }
    }
}

/// A string packing many codes of one system (HES `all_diagnoses`): only containment is allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MultiCodeSystem {
    /// `ICD10MultiCodeString`
    Icd10,
    /// `OPCS4MultiCodeString`
    Opcs4,
}

impl MultiCodeSystem {
    /// ehrQL's class name.
    pub fn class_name(self) -> &'static str {
        match self {
            MultiCodeSystem::Icd10 => "ICD10MultiCodeString",
            MultiCodeSystem::Opcs4 => "OPCS4MultiCodeString",
        }
    }

    /// The system of the codes it packs.
    pub fn code_system(self) -> CodeSystem {
        match self {
            MultiCodeSystem::Icd10 => CodeSystem::Icd10,
            MultiCodeSystem::Opcs4 => CodeSystem::Opcs4,
        }
    }

    /// Whether `prefix` may be searched for (the reference's regexes): a code of the system or
    /// a prefix of one. ICD-10: a letter then 0–4 digits, or two digits, `X` and an optional
    /// digit. OPCS-4: a letter other than `I` then 0–3 digits.
    pub fn is_valid_prefix(self, prefix: &str) -> bool {
        let b = prefix.as_bytes();
        let Some((first, rest)) = b.split_first() else {
            return false;
        };
        let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
        match self {
            MultiCodeSystem::Icd10 => {
                first.is_ascii_uppercase()
                    && ((rest.len() <= 4 && digits(rest))
                        || (matches!(rest.len(), 3 | 4)
                            && digits(&rest[..2])
                            && rest[2] == b'X'
                            && digits(&rest[3..])))
            }
            MultiCodeSystem::Opcs4 => {
                first.is_ascii_uppercase() && *first != b'I' && rest.len() <= 3 && digits(rest)
            }
        }
    }
}

/// The type of a single value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScalarType {
    /// `bool`
    Bool,
    /// `int`
    Int,
    /// `float`
    Float,
    /// `str`
    Str,
    /// `datetime.date`
    Date,
    /// A code of one coding system.
    Code(CodeSystem),
    /// A multi-code string.
    MultiCodeString(MultiCodeSystem),
}

impl ScalarType {
    /// Parses ehrQL's type name (`int`, `date`, `SNOMEDCTCode`, …).
    pub fn from_name(name: &str) -> Option<ScalarType> {
        Some(match name {
            "bool" => ScalarType::Bool,
            "int" => ScalarType::Int,
            "float" => ScalarType::Float,
            "str" => ScalarType::Str,
            "date" => ScalarType::Date,
            "ICD10MultiCodeString" => ScalarType::MultiCodeString(MultiCodeSystem::Icd10),
            "OPCS4MultiCodeString" => ScalarType::MultiCodeString(MultiCodeSystem::Opcs4),
            other => ScalarType::Code(CodeSystem::from_class_name(other)?),
        })
    }

    /// ehrQL's name for the type.
    pub fn name(self) -> &'static str {
        match self {
            ScalarType::Bool => "bool",
            ScalarType::Int => "int",
            ScalarType::Float => "float",
            ScalarType::Str => "str",
            ScalarType::Date => "date",
            ScalarType::Code(c) => c.class_name(),
            ScalarType::MultiCodeString(m) => m.class_name(),
        }
    }

    /// `Numeric`: int or float (bool is not numeric).
    pub fn is_numeric(self) -> bool {
        matches!(self, ScalarType::Int | ScalarType::Float)
    }

    /// `Comparable`: int, float, str, date or a code. bool is not comparable.
    pub fn is_comparable(self) -> bool {
        matches!(
            self,
            ScalarType::Int
                | ScalarType::Float
                | ScalarType::Str
                | ScalarType::Date
                | ScalarType::Code(_)
        )
    }

    /// The primitive type at the SQL and output layers (codes become strings).
    pub fn primitive(self) -> ScalarType {
        match self {
            ScalarType::Code(_) | ScalarType::MultiCodeString(_) => ScalarType::Str,
            other => other,
        }
    }
}

impl fmt::Display for ScalarType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A single value; `Null` is SQL NULL / Python `None`.
#[derive(Clone, Debug)]
pub enum Value {
    /// NULL.
    Null,
    /// A boolean.
    Bool(bool),
    /// A 64-bit integer.
    Int(i64),
    /// A double.
    Float(f64),
    /// A string (also multi-code strings).
    Str(Arc<str>),
    /// A date.
    Date(Date),
    /// A code of one system.
    Code(CodeSystem, Arc<str>),
}

impl Value {
    /// Whether this is NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The type of a non-NULL value.
    pub fn scalar_type(&self) -> Option<ScalarType> {
        Some(match self {
            Value::Null => return None,
            Value::Bool(_) => ScalarType::Bool,
            Value::Int(_) => ScalarType::Int,
            Value::Float(_) => ScalarType::Float,
            Value::Str(_) => ScalarType::Str,
            Value::Date(_) => ScalarType::Date,
            Value::Code(c, _) => ScalarType::Code(*c),
        })
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The string content of a string or code.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) | Value::Code(_, s) => Some(s),
            _ => None,
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Int(_) => 2,
            Value::Float(_) => 3,
            Value::Str(_) => 4,
            Value::Date(_) => 5,
            Value::Code(..) => 6,
        }
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Value {}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Value) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Total order: NULL first (ehrQL sorts NULL as the smallest value), then by type, then by value.
impl Ord for Value {
    fn cmp(&self, other: &Value) -> Ordering {
        match (self, other) {
            (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
            (Value::Int(a), Value::Int(b)) => a.cmp(b),
            (Value::Float(a), Value::Float(b)) => a.total_cmp(b),
            (Value::Str(a), Value::Str(b)) => a.cmp(b),
            (Value::Date(a), Value::Date(b)) => a.cmp(b),
            (Value::Code(s, a), Value::Code(t, b)) => s.cmp(t).then_with(|| a.cmp(b)),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl Hash for Value {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.rank().hash(state);
        match self {
            Value::Null => {}
            Value::Bool(b) => b.hash(state),
            Value::Int(i) => i.hash(state),
            Value::Float(f) => f.to_bits().hash(state),
            Value::Str(s) => s.hash(state),
            Value::Date(d) => d.hash(state),
            Value::Code(c, s) => {
                c.hash(state);
                s.hash(state);
            }
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("None"),
            Value::Bool(true) => f.write_str("True"),
            Value::Bool(false) => f.write_str("False"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => f.write_str(&crate::output::python_float_repr(*x)),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Date(d) => write!(f, "{d}"),
            Value::Code(c, s) => write!(f, "{}({s:?})", c.class_name()),
        }
    }
}
