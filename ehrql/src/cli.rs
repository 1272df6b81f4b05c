//! The command line (being built).
