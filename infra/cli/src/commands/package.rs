//! `prism package`: each function's deployable `bootstrap.zip` for Lambda's
//! `provided.al2023` runtime on arm64, built by cargo-lambda (which links with
//! Zig, so no Docker and no cross toolchain), then opened and checked: one
//! executable `bootstrap` that is an aarch64 ELF. `sam build` makes the same
//! binaries through the template's `rust-cargolambda` build method.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail, ensure};
use prism_cloud::install::{self, Venv};

/// Lambda's arm64 machines.
const TARGET: &str = "aarch64-unknown-linux-gnu";
/// `e_machine` of an aarch64 ELF file.
const EM_AARCH64: u16 = 0xB7;

#[derive(Debug, clap::Args)]
pub struct PackageArgs {
    /// Only these functions (their crate names under functions/); every one by default.
    #[arg(long = "function", short = 'f')]
    pub functions: Vec<String>,
    /// Build without optimisation or debug info (the `package-check` profile):
    /// proves the cross-build, the link and the zip in minutes; what the test
    /// command runs. Without it: the release profile that is deployed.
    #[arg(long)]
    pub check: bool,
}

/// One function's checked zip.
#[derive(Debug)]
pub struct Packaged {
    pub function: String,
    pub zip: PathBuf,
    pub zip_bytes: u64,
    pub bootstrap_bytes: u64,
}

pub fn run(project: &Path, args: &PackageArgs) -> anyhow::Result<()> {
    let functions = if args.functions.is_empty() { all_functions(project)? } else { args.functions.clone() };
    let venv = install::ensure(project, Venv::CargoLambda)?;
    ensure_target()?;
    let started = std::time::Instant::now();
    let mut build = Command::new(venv.join("bin/cargo-lambda"));
    build.args(["lambda", "build", "--arm64", "--output-format", "zip"]);
    if args.check {
        build.args(["--profile", "package-check"]);
    } else {
        build.arg("--release");
    }
    for function in &functions {
        build.args(["--package", function]);
    }
    // cargo-lambda finds Zig as the `ziglang` module of the `python3` on PATH: the venv's.
    let path = std::env::join_paths(
        std::iter::once(venv.join("bin")).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )?;
    let status = build.env("PATH", path).current_dir(project).status().context("running cargo-lambda")?;
    ensure!(status.success(), "cargo lambda build failed ({status})");
    println!(
        "{:<18} {:>12} {:>14}  (built in {:.0?}, {})",
        "function",
        "zip",
        "bootstrap",
        started.elapsed(),
        if args.check { "package-check profile" } else { "release" }
    );
    for function in &functions {
        let packaged = check_zip(function, &project.join("target/lambda").join(function).join("bootstrap.zip"))?;
        println!(
            "{:<18} {:>9.1} MB {:>11.1} MB  aarch64  {}",
            packaged.function,
            mb(packaged.zip_bytes),
            mb(packaged.bootstrap_bytes),
            packaged.zip.display()
        );
    }
    Ok(())
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1_000_000.0
}

/// The crates under `functions/`, each one Lambda.
fn all_functions(project: &Path) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(project.join("functions"))? {
        let entry = entry?;
        if entry.path().join("Cargo.toml").is_file() {
            names.push(entry.file_name().into_string().map_err(|n| anyhow::anyhow!("function folder {n:?} is not UTF-8"))?);
        }
    }
    names.sort();
    Ok(names)
}

/// The Rust standard library for aarch64, from rustup, once.
fn ensure_target() -> anyhow::Result<()> {
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output().context("running rustup")?;
    ensure!(installed.status.success(), "rustup target list failed: {}", String::from_utf8_lossy(&installed.stderr));
    if String::from_utf8_lossy(&installed.stdout).lines().any(|t| t.trim() == TARGET) {
        return Ok(());
    }
    eprintln!("prism: adding the Rust target {TARGET} (once)…");
    let status = Command::new("rustup").args(["target", "add", TARGET]).status().context("running rustup")?;
    ensure!(status.success(), "rustup target add {TARGET} failed ({status})");
    Ok(())
}

/// Opens a function's zip and checks it is what Lambda runs: exactly one
/// entry, `bootstrap`, executable, an aarch64 ELF.
pub fn check_zip(function: &str, zip: &Path) -> anyhow::Result<Packaged> {
    let file = std::fs::File::open(zip).with_context(|| format!("opening {}", zip.display()))?;
    let zip_bytes = file.metadata()?.len();
    let mut archive = zip::ZipArchive::new(file).with_context(|| format!("reading {}", zip.display()))?;
    let names = archive.file_names().map(|name| name.map(String::from)).collect::<Result<Vec<_>, _>>()?;
    ensure!(names == ["bootstrap"], "{}: expected one entry, bootstrap; found {names:?}", zip.display());
    let mut bootstrap = archive.by_name("bootstrap")?;
    let executable = bootstrap.unix_mode().is_some_and(|mode| mode & 0o111 != 0);
    ensure!(executable, "{}: bootstrap is not executable (Lambda would answer Runtime.InvalidEntrypoint)", zip.display());
    let bootstrap_bytes = bootstrap.size();
    let mut header = [0u8; 20];
    bootstrap.read_exact(&mut header).with_context(|| format!("{}: bootstrap is shorter than an ELF header", zip.display()))?;
    let machine = elf_machine(&header)?;
    if machine != EM_AARCH64 {
        bail!("{}: bootstrap is built for ELF machine {machine:#x}, not aarch64 ({EM_AARCH64:#x})", zip.display());
    }
    Ok(Packaged { function: function.to_owned(), zip: zip.to_owned(), zip_bytes, bootstrap_bytes })
}

/// `e_machine` of a 64-bit little-endian ELF file's header.
fn elf_machine(header: &[u8; 20]) -> anyhow::Result<u16> {
    ensure!(header[..4] == *b"\x7fELF", "bootstrap is not an ELF executable");
    ensure!(header[4] == 2 && header[5] == 1, "bootstrap is not a 64-bit little-endian ELF file");
    Ok(u16::from_le_bytes([header[18], header[19]]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn zip_with(entries: &[(&str, &[u8], u32)]) -> anyhow::Result<tempfile::NamedTempFile> {
        let file = tempfile::NamedTempFile::new()?;
        let mut writer = zip::ZipWriter::new(file.reopen()?);
        for (name, bytes, mode) in entries {
            writer.start_file(*name, zip::write::SimpleFileOptions::default().unix_permissions(*mode))?;
            writer.write_all(bytes)?;
        }
        writer.finish()?;
        Ok(file)
    }

    fn elf(machine: u16) -> Vec<u8> {
        let mut header = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0".to_vec();
        header.extend_from_slice(&machine.to_le_bytes());
        header.extend_from_slice(&[0; 44]);
        header
    }

    #[test]
    fn an_executable_aarch64_bootstrap_passes_and_anything_else_is_named() -> anyhow::Result<()> {
        let good = zip_with(&[("bootstrap", &elf(EM_AARCH64), 0o755)])?;
        assert_eq!(check_zip("f", good.path())?.bootstrap_bytes, 64);

        let x86 = zip_with(&[("bootstrap", &elf(0x3E), 0o755)])?;
        assert!(check_zip("f", x86.path()).expect_err("refused").to_string().contains("0x3e, not aarch64"));
        let not_executable = zip_with(&[("bootstrap", &elf(EM_AARCH64), 0o644)])?;
        assert!(check_zip("f", not_executable.path()).expect_err("refused").to_string().contains("not executable"));
        let misnamed = zip_with(&[("dead-letter", &elf(EM_AARCH64), 0o755)])?;
        assert!(check_zip("f", misnamed.path()).expect_err("refused").to_string().contains("expected one entry"));
        let script = zip_with(&[("bootstrap", b"#!/bin/sh\nexec ./app\n", 0o755)])?;
        assert!(check_zip("f", script.path()).is_err());
        Ok(())
    }
}
