//! `project.yaml`: parsing, validation and derived data. (Being built.)
