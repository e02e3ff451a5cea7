//! Creating jobs: for an upload (presigned PUT), for inline text (processed
//! at once when small), or for an object already in the bucket.

use std::collections::BTreeMap;

use chrono::Utc;
use prism_shared::app::lifecycle::{self, LifecycleError};
use prism_shared::domain::commands::{Command, StoredJob};
use prism_shared::domain::envelope::new_trace_id;
use prism_shared::domain::job::{InputObject, JobFailure};
use prism_shared::domain::quotas::{self, Quotas};
use prism_shared::domain::results::JobResult;
use prism_shared::domain::workflow;
use prism_shared::ports::Created;
use prism_shared::{Envelope, Job, JobEvent, JobEventEnvelope, JobId, Modality, Priority, S3Uri, content::sniff, content::text};
use serde::{Deserialize, Serialize};

use crate::problem::ApiError;
use crate::{Deps, SOURCE};

pub const MAX_BATCH: usize = 100;
const MAX_FILE_NAME: usize = 200;
const MAX_METADATA_KEYS: usize = 20;
const MAX_METADATA_BYTES: usize = 2048;
const MAX_IDEMPOTENCY_KEY: usize = 255;
const MAX_METADATA_KEY: usize = 64;
const MAX_METADATA_VALUE: usize = 256;

/// The OpenAPI document's `^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$`.
fn metadata_key_allowed(key: &str) -> bool {
    let mut chars = key.chars();
    key.len() <= MAX_METADATA_KEY
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
}

fn metadata_value_allowed(value: &str) -> bool {
    value.len() <= MAX_METADATA_VALUE && !value.chars().any(char::is_control)
}

/// `POST /v1/jobs`: one of an upload (the default), `text`, or `source`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    #[serde(default)]
    pub file_name: Option<String>,
    #[serde(default)]
    pub priority: Option<Priority>,
    /// Bytes the client will upload: checked against the limits now, and against the upload later.
    #[serde(default)]
    pub size: Option<u64>,
    /// The text itself, instead of an upload.
    #[serde(default)]
    pub text: Option<String>,
    /// An object already in the uploads bucket, under the caller's `uploads/{owner}/`.
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// A workflow to run on the upload (a name, or `default` for its
    /// modality's) instead of one processing step.
    #[serde(default)]
    pub workflow: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct UploadTarget {
    pub method: String,
    pub url: String,
    pub expires_in_s: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SubmitResponse {
    pub job: Job,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<UploadTarget>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    pub items: Vec<serde_json::Value>,
}

/// A user's file name made safe as the last segment of an object key: no
/// directories, no `..`, no control characters, bounded length.
pub fn sanitise_file_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String =
        last.chars().map(|c| if c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | ' ') { c } else { '_' }).take(MAX_FILE_NAME).collect();
    let cleaned = cleaned.trim_matches([' ', '.']).to_owned();
    if cleaned.is_empty() { "upload".into() } else { cleaned }
}

pub(crate) fn validate(req: &SubmitRequest, deps: &Deps) -> Result<(), ApiError> {
    if [req.text.is_some(), req.source.is_some()].iter().filter(|x| **x).count() > 1 {
        return Err(ApiError::Invalid("give at most one of text and source".into()));
    }
    if req.metadata.len() > MAX_METADATA_KEYS || req.metadata.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() > MAX_METADATA_BYTES {
        return Err(ApiError::Invalid(format!("metadata is limited to {MAX_METADATA_KEYS} keys and {MAX_METADATA_BYTES} bytes")));
    }
    if let Some((key, _)) = req.metadata.iter().find(|(k, v)| !metadata_key_allowed(k) || !metadata_value_allowed(v)) {
        return Err(ApiError::Invalid(format!(
            "metadata {key:?}: keys are 1 to {MAX_METADATA_KEY} letters, digits and _ . : - (starting with a letter or digit); \
             values at most {MAX_METADATA_VALUE} bytes without control characters"
        )));
    }
    if let Some(name) = &req.workflow {
        if req.text.is_some() {
            return Err(ApiError::Invalid("inline text runs as one step; upload it to run a workflow".into()));
        }
        if name != workflow::DEFAULT && workflow::find(name).is_err() {
            let known: Vec<&str> = workflow::catalog().iter().map(|d| d.name.as_str()).collect();
            return Err(ApiError::Invalid(format!(
                "no workflow is named {name:?}; there are {} and {:?}",
                known.join(", "),
                workflow::DEFAULT
            )));
        }
    }
    let limits = &deps.config.limits;
    if let Some(size) = req.size.or(req.text.as_ref().map(|t| t.len() as u64)) {
        let limit = if req.text.is_some() { limits.for_modality(Modality::Text) } else { limits.largest() };
        if size > limit {
            return Err(ApiError::TooLarge { size, limit });
        }
    }
    Ok(())
}

/// A `source` the caller may name: an object under its own `uploads/{owner}/`.
pub(crate) fn owned_source(deps: &Deps, owner: &str, source: &str) -> Result<S3Uri, ApiError> {
    let uri: S3Uri = source.parse().map_err(|e: prism_shared::domain::uri::BadS3Uri| ApiError::Invalid(e.to_string()))?;
    let bucket = &deps.config.bucket;
    if uri.bucket != *bucket || !uri.key.starts_with(&format!("uploads/{owner}/")) {
        return Err(ApiError::Forbidden(format!("source must be an object under s3://{bucket}/uploads/{owner}/")));
    }
    Ok(uri)
}

/// The job id for a request: derived from the idempotency key, so a retry finds the same job.
fn job_id_for(owner: &str, idempotency_key: Option<&str>) -> Result<JobId, ApiError> {
    match idempotency_key {
        None => Ok(JobId::new_random()),
        Some(k) if k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY => {
            Err(ApiError::Invalid(format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters")))
        }
        Some(k) => Ok(JobId::for_request(owner, k)),
    }
}

/// Creates one job; `(201, …)` when new, `(200, …)` when the idempotency key named an existing one.
pub async fn submit(
    deps: &Deps,
    owner: &str,
    req: SubmitRequest,
    idempotency_key: Option<&str>,
) -> Result<(u16, SubmitResponse), ApiError> {
    validate(&req, deps)?;
    if let Some(reason) = [&req.file_name, &req.source].into_iter().flatten().find_map(|name| sniff::undecoded_name(name)) {
        return Err(ApiError::Unsupported(reason));
    }
    let id = job_id_for(owner, idempotency_key)?;
    enforce_quotas(deps, owner, &req, &id, idempotency_key).await?;
    let bucket = &deps.config.bucket;
    let name = sanitise_file_name(req.file_name.as_deref().unwrap_or(if req.text.is_some() { "inline.txt" } else { "upload" }));
    let source = req.source.as_deref().map(|s| owned_source(deps, owner, s)).transpose()?;
    let upload = source.clone().unwrap_or_else(|| S3Uri::new(bucket, format!("uploads/{owner}/{id}/{name}")));
    let mut job = Job::new(id, owner.to_owned(), req.priority.unwrap_or_default(), upload.clone(), new_trace_id(), Utc::now());
    job.declared_size = req.size;
    job.metadata = req.metadata.clone();
    job.workflow = req.workflow.clone();
    let mut first_events = vec![JobEventEnvelope::for_job(SOURCE, &job, job.created_event())];
    let inline = req.text.as_ref().filter(|text| text.len() as u64 <= deps.config.sync_text_max_bytes);
    let is_inline = inline.is_some();
    if let Some(text) = inline {
        first_events.extend(inline_text(deps, &mut job, text).await?);
    }
    if let Created::Existing(existing) = lifecycle::create(deps.jobs.as_ref(), &job, &first_events).await? {
        if existing.owner != owner {
            return Err(ApiError::Conflict("that Idempotency-Key is in use".into()));
        }
        let upload = if awaiting_upload(&existing) { upload_target(deps, &existing).await? } else { None };
        if awaiting_classification(&existing) {
            // The first attempt may have stored the upload and died before
            // sending the job on: the retry sends it (classify ignores repeats).
            send_to_classify(deps, &existing).await?;
        }
        return Ok((200, SubmitResponse { job: *existing, upload }));
    }
    tracing::info!(job_id = %job.id, %upload, "job created");
    if let Some(text) = req.text {
        if !is_inline {
            // Written under uploads/, the object flows through intake like any upload.
            deps.blobs.write(&job.upload, bytes::Bytes::from(text.into_bytes()), "text/plain; charset=utf-8").await?;
        }
        return Ok((201, SubmitResponse { job, upload: None }));
    }
    if let Some(src) = source {
        return existing_object(deps, job, src).await.map(|job| (201, SubmitResponse { job, upload: None }));
    }
    let upload = upload_target(deps, &job).await?;
    Ok((201, SubmitResponse { job, upload }))
}

/// Holds back a new job past the owner's quotas (its own, else the stack's):
/// jobs queued or processing, and bytes submitted today. A retry whose key
/// names a job already made is answered as before and counted once.
async fn enforce_quotas(deps: &Deps, owner: &str, req: &SubmitRequest, id: &JobId, key: Option<&str>) -> Result<(), ApiError> {
    let quotas = Quotas::for_owner(deps.config.quotas, deps.quotas.quota(owner).await?);
    // Whether this is a retry of a submission already made: read only when
    // the answer matters (a quota would refuse it, or bytes would be
    // charged), not on every submission that names a key.
    let retry = async || -> Result<bool, ApiError> { Ok(key.is_some() && deps.jobs.get(id).await?.is_some()) };
    let limit = quotas.max_active_jobs;
    if limit > 0 {
        let active = deps.jobs.active_count(owner, limit).await?;
        if active >= limit && !retry().await? {
            return Err(ApiError::QuotaExceeded { active });
        }
    }
    let limit = quotas.max_bytes_per_day;
    if limit > 0 && !retry().await? {
        let bytes = submitted_bytes(deps, owner, req).await?;
        let now = Utc::now();
        // Counted when the job is asked for: a job whose creation then fails
        // has been counted (the owner's loss, never the quota's).
        if !deps.quotas.charge_bytes(owner, quotas::day_of(now), bytes, limit).await? {
            return Err(ApiError::BytesQuotaExceeded { bytes, limit, retry_after_s: quotas::seconds_to_next_day(now) });
        }
    }
    Ok(())
}

/// The bytes a submission brings: inline text's, the declared size of an
/// upload (which its presigned URL is then signed for, so it cannot be
/// passed), or the size of a `source` object.
async fn submitted_bytes(deps: &Deps, owner: &str, req: &SubmitRequest) -> Result<u64, ApiError> {
    if let Some(text) = &req.text {
        return Ok(text.len() as u64);
    }
    if let Some(source) = &req.source {
        let uri = owned_source(deps, owner, source)?;
        return match deps.blobs.stat(&uri).await {
            Ok(meta) => Ok(meta.size),
            Err(prism_shared::BlobError::NotFound(_)) => Err(ApiError::Invalid(format!("no object at {uri}"))),
            Err(e) => Err(e.into()),
        };
    }
    req.size.ok_or_else(|| {
        ApiError::Invalid("this owner has a daily bytes quota: an upload must declare its `size` (the upload URL is signed for it)".into())
    })
}

fn awaiting_upload(job: &Job) -> bool {
    job.input.is_none() && !job.status.is_terminal() && job.upload.key.starts_with("uploads/")
}

async fn upload_target(deps: &Deps, job: &Job) -> Result<Option<UploadTarget>, ApiError> {
    let ttl = deps.config.upload_url_ttl;
    let url = deps.blobs.presign_put(&job.upload, ttl, job.declared_size).await?;
    Ok(Some(UploadTarget { method: "PUT".into(), url, expires_in_s: ttl.as_secs() }))
}

/// Records `events` on `job` as this request last wrote it, in one write.
async fn record(deps: &Deps, job: &Job, events: &[JobEvent]) -> Result<Job, ApiError> {
    match lifecycle::record_from(deps.jobs.as_ref(), &job.id, Some(job.clone()), SOURCE, events).await {
        Ok(r) => Ok(r.job().clone()),
        Err(LifecycleError::Refused { job, .. }) => Ok(*job),
        Err(e) => Err(e.into()),
    }
}

/// Small text is processed in this request: its object written, and the
/// whole life of its job applied to `job`, to be stored with its creation in
/// one write. No moment is left at which a timeout of this request could
/// leave the job half way: a failure stores no job at all.
async fn inline_text(deps: &Deps, job: &mut Job, text: &str) -> Result<Vec<JobEventEnvelope>, ApiError> {
    let bytes = bytes::Bytes::from(text.as_bytes().to_vec());
    let size = bytes.len() as u64;
    let uri = S3Uri::new(&deps.config.bucket, format!("inline/{}/{}.txt", job.owner, job.id));
    let stored = deps.blobs.write(&uri, bytes.clone(), "text/plain; charset=utf-8").await?;
    let mut events = vec![JobEvent::Uploaded { input: InputObject { uri, size, etag: stored.etag } }];
    match sniff::classify(&bytes[..bytes.len().min(sniff::SNIFF_BYTES)], size) {
        Ok(classification) => {
            let mut result = text::analyse(&bytes);
            text::describe(&text::to_utf8(&bytes), &classification.mime, &mut result);
            events.push(JobEvent::Classified(classification));
            events.push(JobEvent::Started { phase: "analysing".into() });
            events.push(JobEvent::Completed { result: JobResult::Text(result), outputs: Vec::new() });
        }
        Err(e) => events.push(JobEvent::Failed(JobFailure::new(e.code(), e.to_string()))),
    }
    let now = Utc::now();
    let mut envelopes = Vec::with_capacity(events.len());
    for event in events {
        // A new job takes these in this order; a refusal would be a bug, told as one.
        job.apply(&event, now).map_err(|error| LifecycleError::Refused { id: job.id.clone(), error, job: Box::new(job.clone()) })?;
        envelopes.push(JobEventEnvelope::for_job(SOURCE, job, event));
    }
    Ok(envelopes)
}

/// An object already uploaded: attach it and send the job to classify.
async fn existing_object(deps: &Deps, job: Job, uri: S3Uri) -> Result<Job, ApiError> {
    let meta = match deps.blobs.stat(&uri).await {
        Ok(m) => m,
        Err(prism_shared::BlobError::NotFound(_)) => return Err(ApiError::Invalid(format!("no object at {uri}"))),
        Err(e) => return Err(e.into()),
    };
    let input = InputObject { uri, size: meta.size, etag: meta.etag };
    let job = record(deps, &job, &[JobEvent::Uploaded { input }]).await?;
    send_to_classify(deps, &job).await?;
    Ok(job)
}

/// A job with its input stored that nothing has classified yet.
fn awaiting_classification(job: &Job) -> bool {
    job.status == prism_shared::JobStatus::Queued && job.input.is_some() && job.modality.is_none()
}

async fn send_to_classify(deps: &Deps, job: &Job) -> Result<(), ApiError> {
    let Some(input) = job.input.clone() else { return Ok(()) };
    let command = Envelope::new(SOURCE, &job.trace_id, Some(job.id.clone()), None, Command::Classify { input, stored: StoredJob::of(job) });
    deps.queue.send(&deps.config.classify_queue_url, command.to_json()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_cannot_escape_their_folder() {
        assert_eq!(sanitise_file_name("../../etc/passwd"), "passwd");
        assert_eq!(sanitise_file_name("C:\\x\\report.pdf"), "report.pdf");
        assert_eq!(sanitise_file_name(".."), "upload");
        assert_eq!(sanitise_file_name("a\u{0}b\nc.txt"), "a_b_c.txt");
        assert_eq!(sanitise_file_name(&"x".repeat(500)).len(), MAX_FILE_NAME);
    }

    #[test]
    fn metadata_keys_and_values_follow_the_documented_rules() {
        for ok in ["a", "customer-id", "S", "x.y:z_1", &"k".repeat(64)] {
            assert!(metadata_key_allowed(ok), "{ok}");
        }
        for bad in ["", "-leading", "bad key", "new\nline", "ü", &"k".repeat(65)] {
            assert!(!metadata_key_allowed(bad), "{bad:?}");
        }
        assert!(metadata_value_allowed("any text, even ü and spaces"));
        assert!(!metadata_value_allowed("bell\u{7}"));
        assert!(!metadata_value_allowed(&"v".repeat(257)));
    }

    #[test]
    fn idempotency_keys_give_stable_ids_per_owner() {
        let a = job_id_for("alice", Some("k1")).expect("id");
        assert_eq!(a, job_id_for("alice", Some("k1")).expect("id"));
        assert_ne!(a, job_id_for("bob", Some("k1")).expect("id"));
        assert!(job_id_for("alice", Some("")).is_err());
    }
}
