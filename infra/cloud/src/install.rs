//! Installs the emulators (and cargo-lambda, for `prism package`) into
//! virtualenvs under `.prism/venvs/`, from the pinned lists in `localstack/`. Idempotent and safe to run from parallel
//! tests: a file lock serialises installers and a stamp of the pin list's
//! contents says whether a venv is current.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// One emulator's virtualenv.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Venv {
    /// moto server (Python 3.11+); also provides cfn-lint.
    Moto,
    /// LocalStack community in host mode (Python 3.13).
    LocalStack,
    /// cargo-lambda with the Zig toolchain it cross-links with.
    CargoLambda,
    /// schemathesis: requests generated from the OpenAPI document.
    Schemathesis,
}

impl Venv {
    fn name(self) -> &'static str {
        match self {
            Self::Moto => "moto",
            Self::LocalStack => "localstack",
            Self::CargoLambda => "cargo-lambda",
            Self::Schemathesis => "schemathesis",
        }
    }

    fn pins(self) -> &'static str {
        match self {
            Self::Moto => "moto.txt",
            Self::LocalStack => "localstack-host.txt",
            Self::CargoLambda => "cargo-lambda.txt",
            Self::Schemathesis => "schemathesis.txt",
        }
    }
}

/// The venv's directory, installed if missing or out of date.
pub fn ensure(project: &Path, venv: Venv) -> anyhow::Result<PathBuf> {
    let root = project.join(".prism/venvs");
    std::fs::create_dir_all(&root)?;
    let dir = root.join(venv.name());
    let pins_path = project.join("localstack").join(venv.pins());
    let pins = std::fs::read_to_string(&pins_path).with_context(|| format!("reading {}", pins_path.display()))?;
    let stamp = dir.join(".prism-pins");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == pins) {
        return Ok(dir);
    }
    let lock = std::fs::File::create(root.join(format!(".{}.lock", venv.name())))?;
    lock.lock().context("locking the venv directory")?;
    // Another process may have finished the install while we waited.
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == pins) {
        return Ok(dir);
    }
    eprintln!("prism: installing {} into {} (once)…", venv.name(), dir.display());
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let mut create = python_for(venv)?;
    run(create.args(["-m", "venv"]).arg(&dir), "creating the virtualenv")?;
    run(
        Command::new(dir.join("bin/pip")).args(["install", "--disable-pip-version-check", "--no-input", "-q", "-r"]).arg(&pins_path),
        "installing pinned packages",
    )?;
    std::fs::write(&stamp, pins)?;
    Ok(dir)
}

/// The interpreter a venv is made with: LocalStack's pins need Python 3.13.
fn python_for(venv: Venv) -> anyhow::Result<Command> {
    match venv {
        Venv::Moto | Venv::CargoLambda | Venv::Schemathesis => Ok(Command::new("python3")),
        Venv::LocalStack => {
            if Command::new("python3.13").arg("--version").output().is_ok_and(|o| o.status.success()) {
                return Ok(Command::new("python3.13"));
            }
            let pyenv = Command::new("pyenv").args(["prefix", "3.13.0"]).output();
            if let Ok(out) = pyenv
                && out.status.success()
            {
                let prefix = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                return Ok(Command::new(Path::new(&prefix).join("bin/python3")));
            }
            bail!("LocalStack needs Python 3.13: install it (e.g. `pyenv install 3.13.0`) or run `prism up --emulator moto`")
        }
    }
}

fn run(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("{what}: cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{what} failed ({}):\n{}{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Whether `command` is an executable on `PATH`.
pub fn on_path(command: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(command).is_file()))
}

fn running_as_root() -> bool {
    rustix::process::getuid().is_root()
}

/// Makes sure each `(command, Debian package)` is there: missing packages are
/// installed with apt-get when running as root; otherwise the error names them.
pub fn ensure_commands(needed: &[(&str, &str)]) -> anyhow::Result<()> {
    let packages: Vec<&str> = needed.iter().filter(|(command, _)| !on_path(command)).map(|(_, package)| *package).collect();
    if packages.is_empty() {
        return Ok(());
    }
    if !running_as_root() {
        bail!("missing commands; install the Debian packages: apt-get install -y {}", packages.join(" "));
    }
    eprintln!("prism: installing {} with apt-get", packages.join(" "));
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&packages)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
    };
    if !install().context("running apt-get")?.success() {
        // A fresh machine has no package lists yet.
        Command::new("apt-get").args(["update", "-qq"]).status().context("running apt-get update")?;
        anyhow::ensure!(install()?.success(), "apt-get install {} failed", packages.join(" "));
    }
    Ok(())
}
