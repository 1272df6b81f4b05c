//! SQL compilation (being built).
