//! A scaled-down load run (the benchmark runs 10,000): 1,000 small jobs, half
//! through the API and half dropped into the bucket, on each emulator setup.
//! Every job ends, none is lost, none is duplicated, no event is recorded
//! twice, no log has a gap, and a job costs at most 20 AWS calls.

#[macro_use]
mod common;

use std::time::Duration;

use common::TestCloud;
use prism_cloud::EmulatorChoice;
use prism_cloud::load;

/// `PRISM_LOAD_JOBS` scales it when measuring by hand.
fn jobs() -> usize {
    std::env::var("PRISM_LOAD_JOBS").ok().and_then(|n| n.parse().ok()).unwrap_or(1000)
}

on_both_setups!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_thousand_jobs_end_once_each_with_nothing_lost_at_twenty_calls_or_fewer_each
);

async fn a_thousand_jobs_end_once_each_with_nothing_lost_at_twenty_calls_or_fewer_each(emulator: EmulatorChoice) {
    let tc = TestCloud::start(emulator).await;
    let jobs = jobs();
    let api = tc.client_for(load::OWNER);
    let report = load::run(&tc.cloud, &api, jobs, load::Pace::FlatOut, Duration::from_secs(900)).await.expect("load run");
    let mut table = String::new();
    load::write(&report, "cargo nextest run -p prism-e2e --test load", &mut table).expect("report");
    eprintln!("{table}");
    assert_eq!(report.lost, 0, "{table}");
    assert_eq!(report.unfinished, 0, "{table}");
    assert_eq!(report.duplicated, 0, "{table}");
    assert_eq!(report.gaps, 0, "{table}");
    assert_eq!(report.completed, jobs, "every small text and image completes: {table}");
    // Issue 15's goal: at most 20 AWS calls per small job, every function
    // together (publishing included, and the fan-out of the watched ones).
    let calls_per_job: f64 = report.calls_per_job.values().sum();
    assert!(calls_per_job <= 20.0, "{calls_per_job:.1} calls per job: {table}");
    tc.finish().await;
}
