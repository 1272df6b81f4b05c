//! Front ends: ways to obtain a query-model [`Dataset`](crate::query_model::Dataset).
//! [`json`] reads ehrQL's serializer JSON (spec §9); [`language`] reads `.py` definitions in the
//! ehrQL language without running Python (spec §3).

pub mod json;
pub mod language;
