//! process-text: decodes a text upload (UTF-8, UTF-16 with a BOM, otherwise
//! Latin-1) and counts bytes, characters, lines and words.

use std::sync::Arc;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use prism_shared::S3Uri;
use prism_shared::bytes::Bytes;
use prism_shared::commands::Command;
use prism_shared::envelope::{self};
use prism_shared::job::JobFailure;
use prism_shared::job::Output;
use prism_shared::lifecycle::{self, LifecycleError};
use prism_shared::ports::{BlobStore, EventBus, JobStore, Queue};
use prism_shared::results::JobResult;
use prism_shared::sqs_batch::{self, Backoff, HandlerError};
use prism_shared::text::{analyse, describe, to_utf8};
use prism_shared::{BlobError, ConfigError, Envelope, JobEvent, config};

pub const SOURCE: &str = "process-text";

#[derive(Debug, Clone)]
pub struct Config {
    /// Larger texts are refused rather than read into memory.
    pub max_bytes: u64,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self { max_bytes: config::parsed_or("TEXT_MAX_BYTES", 64 * 1024 * 1024)? })
    }
}

#[derive(Debug, Clone)]
pub struct Deps {
    pub jobs: Arc<dyn JobStore>,
    pub events: Arc<dyn EventBus>,
    pub blobs: Arc<dyn BlobStore>,
    pub queue: Arc<dyn Queue>,
    pub config: Config,
}

pub async fn handle(deps: &Deps, event: SqsEvent) -> SqsBatchResponse {
    sqs_batch::process_batch(event, deps.queue.as_ref(), Backoff::default(), |msg| handle_message(deps, msg)).await
}

async fn handle_message(deps: &Deps, msg: SqsMessage) -> Result<(), HandlerError> {
    let env: Envelope<Command> = envelope::decode(msg.body.as_deref().unwrap_or_default())?;
    let (Some(job_id), Command::Process { input, mime, .. }) = (env.job_id, env.body) else {
        return Err(HandlerError::Malformed("expected a job.process command with a job_id".into()));
    };
    tracing::info!(job_id = %job_id, trace_id = %env.trace_id, uri = %input.uri, "processing text");
    let record = |event| lifecycle::record(deps.jobs.as_ref(), deps.events.as_ref(), &job_id, SOURCE, event);

    let job = match deps.jobs.get(&job_id).await? {
        Some(job) => job,
        None => return Err(LifecycleError::NotFound(job_id).into()),
    };
    if job.status.is_terminal() {
        tracing::info!(status = %job.status, "job already finished; duplicate ignored");
        return Ok(());
    }
    if job.cancel_requested {
        return ignore_refusal(record(JobEvent::Cancelled).await);
    }
    if let Err(LifecycleError::Refused { error, .. }) = record(JobEvent::Started { phase: "reading".into() }).await.map(drop) {
        tracing::info!(%error, "not started");
        return Ok(());
    }
    let bytes = match deps.blobs.read_all(&input.uri, deps.config.max_bytes).await {
        Ok(b) => b,
        Err(BlobError::TooLarge { size, limit, .. }) => {
            let failure = JobFailure::new("too_large", format!("text of {size} bytes is over the limit of {limit}"));
            return ignore_refusal(record(JobEvent::Failed(failure)).await);
        }
        Err(BlobError::NotFound(uri)) => {
            let failure = JobFailure::new("input_missing", format!("the upload {uri} no longer exists"));
            return ignore_refusal(record(JobEvent::Failed(failure)).await);
        }
        Err(e) => return Err(e.into()),
    };
    record(JobEvent::Progress { phase: "analysing".into(), progress: 40, eta_s: None }).await.map(drop).or_else(refusal_is_ok)?;
    let text = to_utf8(&bytes);
    let mut result = analyse(&bytes);
    describe(&text, &mime, &mut result);
    tracing::info!(words = result.words, lines = result.lines, encoding = ?result.encoding, "analysed");

    // Checkpoint: a cancel requested meanwhile stops the job before it writes anything.
    let job = deps.jobs.get(&job_id).await?.ok_or_else(|| LifecycleError::NotFound(job_id.clone()))?;
    if job.cancel_requested {
        return ignore_refusal(record(JobEvent::Cancelled).await);
    }
    record(JobEvent::Progress { phase: "writing outputs".into(), progress: 80, eta_s: None }).await.map(drop).or_else(refusal_is_ok)?;
    let utf8 = Bytes::from(text);
    let output = Output {
        name: "text".into(),
        uri: S3Uri::new(&input.uri.bucket, format!("outputs/{job_id}/text.txt")),
        content_type: "text/plain; charset=utf-8".into(),
        size: utf8.len() as u64,
    };
    deps.blobs.write(&output.uri, utf8, &output.content_type).await?;
    ignore_refusal(record(JobEvent::Completed { result: JobResult::Text(result), outputs: vec![output] }).await)
}

/// A refused transition means the job moved on (cancelled, failed elsewhere): not an error here.
fn refusal_is_ok(e: LifecycleError) -> Result<(), HandlerError> {
    match e {
        LifecycleError::Refused { error, .. } => {
            tracing::info!(%error, "job moved on");
            Ok(())
        }
        e => Err(e.into()),
    }
}

fn ignore_refusal<T>(r: Result<T, LifecycleError>) -> Result<(), HandlerError> {
    r.map(drop).or_else(refusal_is_ok)
}
