//! The reference documents under `docs/` that are derived from the code, checked against
//! it so they cannot drift: the API reference (generated from the proto comments) and the
//! configuration reference (every key of both services' config structs).
//!
//! Regenerate what is generated: `ENROLL_BLESS_DOCS=1 cargo test -p enroll-e2e --test docs`.
mod api_reference;
mod config_probe;
mod config_reference;

use std::path::PathBuf;

/// The environment variable that rewrites generated documents instead of comparing them.
pub const BLESS_VAR: &str = "ENROLL_BLESS_DOCS";

/// A file of the repository, from this crate's directory (`tests/`).
pub fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

pub fn blessing() -> bool {
    std::env::var(BLESS_VAR).is_ok_and(|value| value == "1")
}
