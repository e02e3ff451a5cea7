//! A scaled-down load run (the benchmark runs 10,000): 120 small jobs, half
//! through the API and half dropped into the bucket, on the default local
//! cloud. Every job ends, none is lost, none is duplicated, no event is
//! recorded twice and no log has a gap. (The emulators bound this machine at
//! about 1.6 jobs/s, so a thousand would take the suite ten minutes.)

mod common;

use std::time::Duration;

use common::TestCloud;
use prism_cloud::EmulatorChoice;
use prism_cloud::load;

/// `PRISM_LOAD_JOBS` scales it when measuring by hand.
fn jobs() -> usize {
    std::env::var("PRISM_LOAD_JOBS").ok().and_then(|n| n.parse().ok()).unwrap_or(120)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_jobs_end_once_each_with_nothing_lost() {
    let tc = TestCloud::start(EmulatorChoice::Localstack).await;
    let jobs = jobs();
    let api = tc.client_for(load::OWNER);
    let report = load::run(&tc.cloud, &api, jobs, Duration::from_secs(900)).await.expect("load run");
    let mut table = String::new();
    load::write(&report, "cargo nextest run -p prism-e2e --test load", &mut table).expect("report");
    eprintln!("{table}");
    assert_eq!(report.lost, 0, "{table}");
    assert_eq!(report.unfinished, 0, "{table}");
    assert_eq!(report.duplicated, 0, "{table}");
    assert_eq!(report.gaps, 0, "{table}");
    assert_eq!(report.completed, jobs, "every small text and image completes: {table}");
    tc.finish().await;
}
