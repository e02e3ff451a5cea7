//! Idle load: the requests an idle local cloud makes of its emulators, read
//! from their request logs over a quiet stretch. Event-source pollers
//! long-poll as Lambda's do, so this should be close to nothing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

/// How long the cloud is left alone before counting, and then counted.
const SETTLE: Duration = Duration::from_secs(5);
const WINDOW: Duration = Duration::from_secs(30);

/// Counts the emulators' requests over [`WINDOW`] with nothing submitted.
pub async fn idle_requests(logs: &Path, out: &mut String) -> anyhow::Result<()> {
    tokio::time::sleep(SETTLE).await;
    let before = requests(logs)?;
    tokio::time::sleep(WINDOW).await;
    let after = requests(logs)?;
    let seconds = WINDOW.as_secs_f64();
    writeln!(out, "## Idle load\n")?;
    writeln!(
        out,
        "Requests the emulators logged over {seconds:.0} s of an idle local cloud, {:.0} s after it started.\n",
        SETTLE.as_secs_f64()
    )?;
    writeln!(out, "| emulator: operation | requests/s |\n|---|---:|")?;
    let mut total = 0.0;
    for (operation, count) in &after {
        let rate = count.saturating_sub(before.get(operation).copied().unwrap_or(0)) as f64 / seconds;
        total += rate;
        if rate > 0.0 {
            writeln!(out, "| {operation} | {rate:.2} |")?;
        }
    }
    writeln!(out, "| **total** | **{total:.2}** |\n")?;
    Ok(())
}

/// Requests logged so far, by emulator and operation: each emulator writes
/// a line per request naming it (`… request.aws : AWS sqs.ReceiveMessage => 200`;
/// moto's line is Prism's, see `localstack/moto_server.py`).
pub fn requests(logs: &Path) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut counts = BTreeMap::new();
    for (emulator, file) in [("localstack", "localstack.log"), ("moto", "moto.log")] {
        let text = match std::fs::read_to_string(logs.join(file)) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        for operation in text.lines().filter_map(logged_operation) {
            *counts.entry(format!("{emulator}: {operation}")).or_insert(0) += 1;
        }
    }
    Ok(counts)
}

/// The operation a request-log line names, if it is one.
fn logged_operation(line: &str) -> Option<&str> {
    let (_, rest) = line.split_once("request.aws")?;
    rest.split_whitespace().nth(2)
}

#[cfg(test)]
mod tests {
    use super::logged_operation;

    #[test]
    fn reads_the_operation_from_either_emulators_request_line() {
        let localstack =
            "localstack | 2026-11-28T21:07:47.722  INFO --- [et.reactor-0] localstack.request.aws     : AWS sqs.CreateQueue => 200";
        let moto = "2026-11-28T21:14:10.305 INFO moto.request.aws : AWS dynamodbstreams.GetRecords => 200";
        assert_eq!(logged_operation(localstack), Some("sqs.CreateQueue"));
        assert_eq!(logged_operation(moto), Some("dynamodbstreams.GetRecords"));
        assert_eq!(logged_operation(" * Running on http://127.0.0.1:5992"), None);
    }
}
