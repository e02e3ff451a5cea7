//! The emulators as the local cloud runs them behave as AWS does where Prism
//! relies on it.

mod common;

use std::process::Command;

/// Processors racing for one slot of a job's log rely on DynamoDB letting
/// exactly one conditional write through. moto checks and writes on its
/// request threads with nothing between; `moto_server.py` serialises writes.
#[test]
fn conditional_writes_on_the_emulated_dynamodb_let_exactly_one_writer_through() {
    let project = common::project_dir();
    let python = project.join(".prism/venvs/moto/bin/python");
    assert!(python.exists(), "the moto virtualenv is installed by the test command: {}", python.display());
    let script = project.join("localstack/moto_conditional_race.py");
    let out = Command::new(&python).arg(&script).arg("patched").output().expect("run the race");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let through: u32 = text.trim().rsplit(' ').next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("unexpected output {text:?}"));
    assert_eq!(through, 1, "writers let through on one key by the patched moto: {text}");
}
