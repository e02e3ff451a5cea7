//! `prism install`: the emulators' pinned virtualenvs.

use std::path::Path;

use prism_cloud::install::{self, Venv};

pub fn run(project: &Path) -> anyhow::Result<()> {
    for venv in [Venv::Moto, Venv::LocalStack] {
        let dir = install::ensure(project, venv)?;
        println!("{venv:?}: {}", dir.display());
    }
    Ok(())
}
