//! Any sequence of job events applied to a new job through the state
//! machine: never a panic; every change moves `seq` by one; a finished job
//! never changes again; progress never goes backwards.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prism_shared::domain::job::Applied;
use prism_shared::{Job, JobEvent, JobId, Priority, S3Uri};

fuzz_target!(|data: &[u8]| {
    let Ok(events) = serde_json::from_slice::<Vec<JobEvent>>(data) else { return };
    let now = chrono::Utc::now();
    let upload = S3Uri::new("bucket", "uploads/owner/file");
    let mut job = Job::new(JobId::new_random(), "owner".into(), Priority::Normal, upload, "trace".into(), now);
    for event in &events {
        let before = job.clone();
        match job.apply(event, now) {
            Ok(Applied::Changed) => {
                assert_eq!(job.seq, before.seq + 1);
                assert!(!before.status.is_terminal(), "{:?} changed a finished job", event.event_type());
                assert!(job.progress >= before.progress || job.status != before.status, "progress went back");
            }
            Ok(Applied::AlreadyApplied) | Err(_) => assert_eq!(job, before, "a refused or repeated event changed the job"),
        }
    }
});
