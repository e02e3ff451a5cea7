//! Helpers for tests of the functions (feature `test-util`): in-memory fakes
//! of every port, and sample events from `events/`.

pub mod memory;

use std::path::PathBuf;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The project's `events/` folder.
pub fn events_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../events")
}

/// Reads `events/{name}` as `T`, checking that it survives a round trip
/// through `T` unchanged (so the sample and the type agree on every field).
pub fn sample_event<T: DeserializeOwned + Serialize>(name: &str) -> T {
    let path = events_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let event: T = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not a valid {}: {e}", std::any::type_name::<T>()));
    let once = serde_json::to_value(&event).unwrap_or_else(|e| panic!("serialising {name}: {e}"));
    let again: T = serde_json::from_value(once.clone()).unwrap_or_else(|e| panic!("re-reading {name}: {e}"));
    let twice = serde_json::to_value(&again).unwrap_or_else(|e| panic!("serialising {name}: {e}"));
    assert_eq!(once, twice, "{name} changed in a round trip");
    event
}

/// A job in `jobs`, queued by owner `default` for an upload named `file` in
/// the dev stage's bucket: the job the `sqs-process-*` samples point at.
pub async fn queued_job(jobs: &dyn crate::ports::JobStore, id: &str, file: &str) -> (crate::JobId, crate::S3Uri) {
    let id: crate::JobId = id.parse().unwrap_or_else(|e| panic!("{id}: {e}"));
    let upload: crate::S3Uri =
        format!("s3://prism-dev-000000000000-uploads/uploads/default/{id}/{file}").parse().unwrap_or_else(|e| panic!("{file}: {e}"));
    let job = crate::Job::new(id.clone(), "default".into(), crate::Priority::Normal, upload.clone(), "t".into(), chrono::Utc::now());
    jobs.create(&job, &[crate::JobEventEnvelope::for_job("test", &job, job.created_event())]).await.expect("create");
    (id, upload)
}

/// The phases a job's events named, in order.
pub async fn phases(jobs: &dyn crate::ports::JobStore, id: &crate::JobId) -> Vec<String> {
    let events = jobs.events(id, 0, 1000).await.expect("events");
    events.iter().filter_map(|e| serde_json::to_value(&e.body).ok()?["payload"]["phase"].as_str().map(str::to_owned)).collect()
}

/// A handler's [`Deps`](crate::ports::Deps) over the in-memory job and blob stores a test
/// inspects, with a fresh queue.
pub fn memory_deps<C>(
    jobs: std::sync::Arc<crate::testing::memory::MemoryJobStore>,
    blobs: std::sync::Arc<crate::testing::memory::MemoryBlobStore>,
    config: C,
) -> crate::ports::Deps<C> {
    crate::ports::Deps {
        jobs: jobs.clone(),
        blobs,
        queue: std::sync::Arc::new(crate::testing::memory::MemoryQueue::default()),
        schedules: std::sync::Arc::new(crate::testing::memory::MemoryScheduleStore::new(jobs.clone())),
        lanes: std::sync::Arc::new(crate::testing::memory::MemoryLaneControl::default()),
        dead_letters: std::sync::Arc::new(crate::testing::memory::MemoryDeadLetters::default()),
        quotas: std::sync::Arc::new(crate::testing::memory::MemoryQuotas::default()),
        breakers: std::sync::Arc::new(crate::testing::memory::MemoryBreakers::default()),
        breaker_policy: crate::domain::breakers::BreakerPolicy::default(),
        estimates: std::sync::Arc::new(crate::testing::memory::MemoryEstimates::default()),
        config,
    }
}
