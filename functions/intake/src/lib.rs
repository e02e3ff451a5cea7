//! intake: S3 `ObjectCreated` notifications, delivered through SQS, become jobs.
//!
//! An upload under `uploads/{owner}/{job_id}/…` whose job the API created is
//! attached to that job; any other object under `uploads/` (an operator's
//! drop) gets a job whose id is derived from bucket, key and ETag, so a
//! redelivered notification finds the same job instead of making another.

use aws_lambda_events::s3::{S3Event, S3EventRecord};
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::Utc;
use prism_shared::commands::Command;
use prism_shared::envelope::new_trace_id;
use prism_shared::job::{InputObject, Lane};
use prism_shared::lifecycle::{self, LifecycleError, Recorded};
use prism_shared::ports::Created;
use prism_shared::sqs_batch::{self, Backoff, HandlerError};
use prism_shared::{ConfigError, Envelope, Job, JobEvent, JobEventEnvelope, JobId, Priority, S3Uri, config};

pub const SOURCE: &str = "intake";
/// Only objects under this prefix are uploads; outputs and the rest are ignored.
pub const UPLOAD_PREFIX: &str = "uploads/";
/// The owner of a file dropped straight under `uploads/` with no owner folder.
pub const DEFAULT_OWNER: &str = "default";

#[derive(Debug, Clone)]
pub struct Config {
    pub classify_queue_url: String,
    /// Where urgent and high-priority jobs go instead, to skip the backlog.
    pub classify_fast_queue_url: Option<String>,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            classify_queue_url: config::required("CLASSIFY_QUEUE_URL")?,
            classify_fast_queue_url: config::optional("CLASSIFY_FAST_QUEUE_URL"),
        })
    }

    fn classify_queue(&self, priority: Priority) -> &str {
        match (priority.lane(), &self.classify_fast_queue_url) {
            (Lane::Fast, Some(fast)) => fast,
            _ => &self.classify_queue_url,
        }
    }
}

pub type Deps = prism_shared::ports::Deps<Config>;

pub async fn handle(deps: &Deps, event: SqsEvent) -> SqsBatchResponse {
    sqs_batch::process_batch(event, deps.queue.as_ref(), Backoff::default(), |msg| handle_message(deps, msg)).await
}

async fn handle_message(deps: &Deps, msg: SqsMessage) -> Result<(), HandlerError> {
    let body = msg.body.unwrap_or_default();
    let value: serde_json::Value = serde_json::from_str(&body)?;
    // S3 sends one test message when a notification is configured.
    if value.get("Event").and_then(|e| e.as_str()) == Some("s3:TestEvent") {
        tracing::info!("acknowledged s3:TestEvent");
        return Ok(());
    }
    let event: S3Event = serde_json::from_value(with_required_fields(value))?;
    for record in &event.records {
        handle_record(deps, record).await?;
    }
    Ok(())
}

/// S3 always sends `userIdentity` and `requestParameters`, which the event
/// type requires; moto leaves them out. Intake needs neither, so absent ones
/// are filled with empty objects rather than refusing the notification.
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

async fn handle_record(deps: &Deps, record: &S3EventRecord) -> Result<(), HandlerError> {
    let Some(upload) = upload_of(record) else {
        tracing::info!(event = ?record.event_name, key = ?record.s3.object.key, "not an upload; ignored");
        return Ok(());
    };
    let input = InputObject { uri: upload.uri.clone(), size: upload.size, etag: upload.etag.clone() };
    let id = job_for(deps, &upload).await?;
    tracing::info!(job_id = %id, uri = %upload.uri, size = upload.size, "upload received");
    let recorded = match lifecycle::record(deps.jobs.as_ref(), &id, SOURCE, JobEvent::Uploaded { input: input.clone() }).await {
        Ok(r) => r,
        // A redelivery for a finished job, or a job cancelled before its upload arrived.
        Err(LifecycleError::Refused { error, .. }) => {
            tracing::info!(job_id = %id, %error, "upload not attached; nothing to do");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    if let Recorded::AlreadyApplied(job) = &recorded
        && job.modality.is_some()
    {
        tracing::info!(job_id = %id, "already classified; duplicate notification ignored");
        return Ok(());
    }
    let job = recorded.job();
    let command = Envelope::new(SOURCE, &job.trace_id, Some(job.id.clone()), None, Command::Classify { input });
    deps.queue.send(deps.config.classify_queue(job.priority), command.to_json()).await?;
    Ok(())
}

/// The job this upload belongs to, created if it is a direct drop.
async fn job_for(deps: &Deps, upload: &Upload) -> Result<JobId, HandlerError> {
    if let Some(id) = &upload.claimed_job
        && let Some(job) = deps.jobs.get(id).await?
        && job.owner == upload.owner
        && job.upload == upload.uri
        && job.input.as_ref().is_none_or(|i| i.etag == upload.etag)
    {
        return Ok(job.id);
    }
    let id = JobId::for_object(&upload.uri, &upload.etag);
    let now = Utc::now();
    let job = Job::new(id.clone(), upload.owner.clone(), Priority::default(), upload.uri.clone(), new_trace_id(), now);
    let created = JobEventEnvelope::for_job(SOURCE, &job, job.created_event());
    if let Created::Existing(_) = lifecycle::create(deps.jobs.as_ref(), &job, &created).await? {
        tracing::info!(job_id = %id, "job for this object exists already");
    }
    Ok(id)
}
