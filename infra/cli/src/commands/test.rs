//! `prism test`: everything CI checks, in order; each step must succeed.

use std::path::Path;
use std::process::Command;

use anyhow::Context as _;
use prism_cloud::install::{self, Venv};

use crate::tools::{BROWSER_TOOLS, CORPUS_TOOLS, PROCESSOR_TOOLS, REFERENCE_TOOLS};

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Passed on to `cargo nextest run`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

pub fn run(project: &Path, extra: &[String]) -> anyhow::Result<()> {
    install::ensure_commands(&[PROCESSOR_TOOLS, CORPUS_TOOLS, REFERENCE_TOOLS, BROWSER_TOOLS].concat())?;
    let moto = install::ensure(project, Venv::Moto)?;
    install::ensure(project, Venv::LocalStack)?;
    // The generated-requests test runs schemathesis: installed once, here, not by the tests in parallel.
    install::ensure(project, Venv::Schemathesis)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let step = |name: &str, cmd: &mut Command| -> anyhow::Result<()> {
        eprintln!("prism test: {name}");
        let status = cmd.current_dir(project).status().with_context(|| format!("running {name}"))?;
        anyhow::ensure!(status.success(), "{name} failed ({status})");
        Ok(())
    };
    step("cfn-lint template.yaml", Command::new(moto.join("bin/cfn-lint")).arg("template.yaml"))?;
    // Every declared dependency is used (cargo-machete reads the sources, no
    // build needed). Called by its own name: as `cargo machete` under `cargo
    // run` it takes the subcommand's name for the folder to read.
    if !Command::new("cargo-machete").arg("--version").output().is_ok_and(|o| o.status.success()) {
        step("cargo install cargo-machete", Command::new(&cargo).args(["install", "--locked", "cargo-machete@0.9.2"]))?;
    }
    step("cargo-machete", Command::new("cargo-machete").arg("."))?;
    eprintln!("prism test: feature pins");
    check_feature_pins(&cargo, project)?;
    // The end-to-end tests run the real function binaries. Building every
    // target in one go unifies features as the test build will, so the test
    // run reuses these artifacts instead of compiling the SDKs again.
    step("cargo build --workspace --all-targets", Command::new(&cargo).args(["build", "--workspace", "--all-targets"]))?;
    let has_nextest = Command::new(&cargo).args(["nextest", "--version"]).output().is_ok_and(|o| o.status.success());
    let mut tests = Command::new(&cargo);
    if has_nextest {
        tests.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
    } else {
        tests.args(["test", "--workspace", "--no-fail-fast"]);
    }
    step("tests", tests.args(extra))
}

/// Fails when a dependency of this CLI is built with other features than
/// the workspace build gives it: the test command would then compile it,
/// and everything above it, twice (see the feature pins in infra/cli/Cargo.toml).
fn check_feature_pins(cargo: &str, project: &Path) -> anyhow::Result<()> {
    let resolved = |selection: &[&str], edges: &str| -> anyhow::Result<std::collections::BTreeSet<String>> {
        let out = Command::new(cargo)
            .arg("tree")
            .args(selection)
            .args(["--format", "{p} [{f}]", "--prefix", "none", "--edges", edges])
            .current_dir(project)
            .output()
            .context("running cargo tree")?;
        anyhow::ensure!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8_lossy(&out.stdout).lines().map(|l| l.trim_end_matches(" (*)").to_owned()).collect())
    };
    let alone = resolved(&["--package", "prism"], "normal,build")?;
    let whole = resolved(&["--workspace"], "normal,build,dev")?;
    let drifted: Vec<&String> = alone.difference(&whole).collect();
    anyhow::ensure!(
        drifted.is_empty(),
        "the CLI builds these with other features than the workspace does (give it the workspace's in infra/cli/Cargo.toml): {drifted:#?}"
    );
    Ok(())
}
