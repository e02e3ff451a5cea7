//! The deployable artifact: one function cross-built for Lambda's arm64
//! machines by cargo-lambda and zipped, as `prism package` does for all of
//! them. Built with the `package-check` profile (no optimisation) so CI pays
//! minutes, not the release build's tens; the zip's checks are the same.

use std::process::Command;

#[test]
fn a_function_packages_as_a_zip_holding_an_executable_aarch64_bootstrap() {
    let project = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let zip = project.join("target/lambda/dead-letter/bootstrap.zip");
    // Whatever is checked below was made by this run.
    match std::fs::remove_file(&zip) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => panic!("removing {}: {e}", zip.display()),
        _ => {}
    }
    let out = Command::new(env!("CARGO_BIN_EXE_prism"))
        .args(["package", "--check", "--function", "dead-letter"])
        .current_dir(&project)
        .output()
        .expect("running prism package");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "prism package failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let line = stdout.lines().find(|l| l.starts_with("dead-letter ")).unwrap_or_else(|| panic!("no line for dead-letter in:\n{stdout}"));
    assert!(line.contains(" aarch64 "), "{line}");
    assert!(zip.is_file(), "{} was not written", zip.display());
}
