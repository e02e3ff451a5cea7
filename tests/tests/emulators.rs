//! The emulators as the local cloud runs them behave as AWS does where Prism
//! relies on it. Each case is a script under `localstack/` that drives moto's
//! backend as `moto_server.py` patches it (`plain` shows moto as it ships).

mod common;

use std::process::Command;

/// What `localstack/{script}` printed after its mode, run on the patched moto.
fn patched(script: &str) -> String {
    let project = common::project_dir();
    let python = project.join(".prism/venvs/moto/bin/python");
    assert!(python.exists(), "the moto virtualenv is installed by the test command: {}", python.display());
    let out = Command::new(&python).arg(project.join("localstack").join(script)).arg("patched").output().expect("run the script");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    text.trim().strip_prefix("patched ").unwrap_or_else(|| panic!("unexpected output {text:?}")).to_owned()
}

/// Processors racing for one slot of a job's log rely on DynamoDB letting
/// exactly one conditional write through. moto checks and writes on its
/// request threads with nothing between; `moto_server.py` serialises writes.
#[test]
fn conditional_writes_on_the_emulated_dynamodb_let_exactly_one_writer_through() {
    let text = patched("moto_conditional_race.py");
    let through: u32 = text.rsplit(' ').next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("unexpected output {text:?}"));
    assert_eq!(through, 1, "writers let through on one key by the patched moto: {text}");
}

/// A schedule's slot starts its job in a transaction that a delete cancels.
/// moto wrote the cancelled items, rolled the table back to a copy, and left
/// the stream's readers on the discarded table: the publisher went silent.
#[test]
fn a_cancelled_transaction_on_the_emulated_dynamodb_writes_nothing_and_its_stream_reads_on() {
    assert_eq!(patched("moto_transaction_stream.py"), "stored: after stream read: after");
}

/// An index query (the quota's, per submission) read the whole table, every
/// stream record stayed in moto for good, and moto kept every item object
/// it ever made (for its dashboard: each write, each query's copies): the
/// 10,000-job run slowed and grew by a gigabyte every two minutes. The
/// patched moto keeps each index's partitions as writes move items, drops
/// the stream records every reader has read past (here at once; the local
/// cloud keeps them five minutes longer), and keeps no item objects aside.
#[test]
fn the_emulated_dynamodb_reads_one_index_partition_per_query_and_drops_stream_records_every_reader_has_read() {
    assert_eq!(
        patched("moto_growth.py"),
        "passes per index query: 0; found: other7,a,d; stream records kept while a reader lags: 507, once read: 0; next read: after; \
         items held for moto's dashboard: 0"
    );
}

/// moto checked the 400 KB item limit as each attribute was set, summing
/// the whole item again each time: an item of n attributes cost n² sizes,
/// a tenth of moto's time under the load benchmark. The patched moto sizes
/// an item once as it builds it, against the same limit.
#[test]
fn the_emulated_dynamodb_sizes_an_item_once_and_still_refuses_one_over_the_limit() {
    assert_eq!(
        patched("moto_item_size.py"),
        "10 attributes: 14 sizes, as stored; 80 attributes: 84 sizes, as stored; over the limit: ValidationException"
    );
}
