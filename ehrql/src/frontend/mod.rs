//! Front ends: ways to obtain a query-model [`Dataset`](crate::query_model::Dataset).
//! Only the serializer JSON (spec §9) exists today; the Python-syntax front end is future work.

pub mod json;
pub mod language;
