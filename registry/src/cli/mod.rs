//! The arguments of `berth`'s client subcommands, and turning them into requests.

pub mod gc;
pub mod replicate;

use std::path::PathBuf;

use anyhow::Context;

/// A password from its file (its last line break dropped), else from the variable `env`.
pub(super) fn secret(file: Option<&PathBuf>, env: &str) -> anyhow::Result<Option<String>> {
    match file {
        Some(f) => Ok(Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading {}", f.display()))?
                .trim_end_matches(['\n', '\r'])
                .to_owned(),
        )),
        None => Ok(std::env::var(env).ok()),
    }
}
