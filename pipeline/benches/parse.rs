//! Parse-and-validate time for a generated 500-action project (filled in below).
fn main() {}
