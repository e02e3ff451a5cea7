//! Uploads as S3 announces them: reading the notifications the bucket sends
//! (to intake, and after repeated failures to intake's dead-letter queue) and
//! finding the job an uploaded object belongs to.
//!
//! An upload at the API's key (`uploads/{owner}/{job_id}/{name}`) belongs to
//! the job the API created. Any other object under `uploads/` (an operator's
//! drop) gets a job whose id is derived from bucket, key and ETag, so a
//! redelivered notification finds the same job instead of making another.

use aws_lambda_events::s3::{S3Event, S3EventRecord};
use chrono::Utc;

use crate::app::lifecycle::{self, LifecycleError};
use crate::domain::envelope::{JobEventEnvelope, new_trace_id};
use crate::domain::job::{InputObject, Job, JobEvent, JobId, Priority};
use crate::domain::uri::S3Uri;
use crate::ports::{Created, JobStore};

/// Only objects under this prefix are uploads; outputs and the rest are ignored.
pub const UPLOAD_PREFIX: &str = "uploads/";
/// The owner of a file dropped straight under `uploads/` with no owner folder.
pub const DEFAULT_OWNER: &str = "default";
/// How many expired jobs of one object (same key and ETag, dropped again after
/// the retention period each time) are stepped over before giving up.
const MAX_GENERATIONS: u32 = 64;

/// An uploaded object as the notification describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub uri: S3Uri,
    pub size: u64,
    pub etag: String,
    pub owner: String,
    /// The job id in the key, when the key has the API's layout.
    pub claimed_job: Option<JobId>,
}

impl Upload {
    /// The object as a job's input.
    pub fn input(&self) -> InputObject {
        InputObject { uri: self.uri.clone(), size: self.size, etag: self.etag.clone() }
    }
}

/// Reads an S3 notification as SQS carries it; `None` for the test message
/// S3 sends when a notification is configured.
pub fn notification(body: &str) -> Result<Option<S3Event>, serde_json::Error> {
    let value: serde_json::Value = serde_json::from_str(body)?;
    if value.get("Event").and_then(|e| e.as_str()) == Some("s3:TestEvent") {
        return Ok(None);
    }
    serde_json::from_value(with_required_fields(value)).map(Some)
}

/// S3 always sends `userIdentity` and `requestParameters`, which the event
/// type requires; moto leaves them out. Nothing here needs either, so absent
/// ones are filled with empty objects rather than refusing the notification.
fn with_required_fields(mut value: serde_json::Value) -> serde_json::Value {
    if let Some(records) = value.get_mut("Records").and_then(|r| r.as_array_mut()) {
        for record in records.iter_mut().filter_map(|r| r.as_object_mut()) {
            for field in ["userIdentity", "requestParameters"] {
                record.entry(field).or_insert_with(|| serde_json::json!({}));
            }
        }
    }
    value
}

/// Reads an `ObjectCreated` record; `None` for other events and keys outside `uploads/`.
pub fn upload_of(record: &S3EventRecord) -> Option<Upload> {
    let created = record.event_name.as_deref().is_some_and(|n| n.starts_with("ObjectCreated"));
    let bucket = record.s3.bucket.name.clone()?;
    // Keys in S3 events are URL-encoded, with '+' for spaces.
    let encoded = record.s3.object.key.as_deref()?.replace('+', " ");
    let raw_key = urlencoding::decode(&encoded).ok()?.into_owned();
    let rest = raw_key.strip_prefix(UPLOAD_PREFIX)?;
    if !created || rest.is_empty() || rest.ends_with('/') {
        return None;
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let owner = if segments.len() >= 2 { segments[0] } else { DEFAULT_OWNER };
    let claimed_job = (segments.len() >= 3).then(|| segments[1].parse().ok()).flatten();
    Some(Upload {
        uri: S3Uri::new(bucket, raw_key.clone()),
        size: record.s3.object.size.and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
        etag: record.s3.object.e_tag.clone().unwrap_or_default().trim_matches('"').to_owned(),
        owner: owner.to_owned(),
        claimed_job,
    })
}

/// The job `upload` belongs to, as stored: the API's job its key names, or
/// the job derived from the object, created by `source` if there is none
/// yet. A derived job past its retention is another upload's: the same
/// object dropped again then gets the next generation's id, which every
/// redelivery of the new notification derives alike.
pub async fn job_for(store: &dyn JobStore, upload: &Upload, source: &str) -> Result<Job, LifecycleError> {
    let now = Utc::now();
    if let Some(id) = &upload.claimed_job
        && let Some(job) = store.get(id).await?
        && job.owner == upload.owner
        && job.upload == upload.uri
        && job.input.as_ref().is_none_or(|i| i.etag == upload.etag)
    {
        return Ok(job);
    }
    for generation in 0..MAX_GENERATIONS {
        let id = JobId::for_object_generation(&upload.uri, &upload.etag, generation);
        let mut job = Job::new(id.clone(), upload.owner.clone(), Priority::default(), upload.uri.clone(), new_trace_id(), now);
        // A drop's job starts uploaded: its first two events in one write.
        let created = JobEventEnvelope::for_job(source, &job, job.created_event());
        let upload_event = JobEvent::Uploaded { input: upload.input() };
        job.apply(&upload_event, now).map_err(|error| LifecycleError::Refused { id: id.clone(), error, job: Box::new(job.clone()) })?;
        let uploaded = JobEventEnvelope::for_job(source, &job, upload_event);
        match lifecycle::create(store, &job, &[created, uploaded]).await? {
            Created::New => return Ok(job),
            Created::Existing(existing) if !existing.is_expired(now) => {
                tracing::info!(job_id = %id, "job for this object exists already");
                return Ok(*existing);
            }
            Created::Existing(_) => tracing::info!(job_id = %id, "the job of an earlier upload of this object has expired"),
        }
    }
    Err(LifecycleError::Store(crate::ports::error::StoreError::Conflict(JobId::for_object(&upload.uri, &upload.etag))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::job::JobStatus;
    use crate::testing::memory::MemoryJobStore;

    fn dropped() -> Upload {
        Upload { uri: S3Uri::new("b", "uploads/report.txt"), size: 3, etag: "e1".into(), owner: DEFAULT_OWNER.into(), claimed_job: None }
    }

    #[tokio::test]
    async fn a_redelivered_drop_finds_its_job_and_a_drop_after_expiry_starts_a_new_one() {
        let store = MemoryJobStore::default();
        let first = job_for(&store, &dropped(), "t").await.expect("job").id;
        assert_eq!(first, JobId::for_object(&dropped().uri, "e1"), "generation 0 is the plain derived id");
        assert_eq!(job_for(&store, &dropped(), "t").await.expect("again").id, first, "a redelivery finds the same job");

        store.expire(&first);
        let second = job_for(&store, &dropped(), "t").await.expect("new job");
        assert_eq!((second.status, second.input, second.seq), (JobStatus::Queued, Some(dropped().input()), 2), "created uploaded");
        let second = second.id;
        assert_ne!(second, first, "the expired job is not reused");
        assert_eq!(job_for(&store, &dropped(), "t").await.expect("again").id, second, "and the new one is found again");
        assert_eq!(store.events(&second, 0, 10).await.expect("log").len(), 2, "with only its own events");
    }
}
