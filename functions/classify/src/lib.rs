//! classify: reads an upload's first bytes (one ranged GET), decides its
//! modality from content alone, and routes the job to that modality's queue.
//! Empty and unrecognised content ends the job here with a clear reason.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use prism_shared::app::lifecycle::{self, LifecycleError, Recorded};
use prism_shared::app::sqs_batch::{self, Backoff, HandlerError, Outbox};
use prism_shared::content::sniff::{self, SNIFF_BYTES};
use prism_shared::domain::commands::{Command, StoredJob};
use prism_shared::domain::envelope::{self};
use prism_shared::domain::job::{InputObject, JobFailure};
use prism_shared::domain::lanes;
use prism_shared::domain::limits::SizeLimits;
use prism_shared::domain::workflow;
use prism_shared::runtime::metrics::{self, Metric};
use prism_shared::runtime::{config, routes::ProcessorQueues};
use prism_shared::{BlobError, ConfigError, Envelope, Job, JobEvent, JobId, JobStatus, Modality};

pub const SOURCE: &str = "classify";

#[derive(Debug, Clone)]
pub struct Config {
    pub routes: ProcessorQueues,
    pub limits: SizeLimits,
    /// The `workflow` function's queue, for jobs that asked for a workflow.
    pub workflow_queue_url: Option<String>,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            routes: ProcessorQueues::from_env()?,
            limits: SizeLimits::from_env()?,
            workflow_queue_url: config::optional("WORKFLOW_QUEUE_URL"),
        })
    }
}

pub type Deps = prism_shared::ports::Deps<Config>;

/// The classifier's guess for `size` bytes of `modality`, scaled by what
/// the last week's finished jobs of that modality took against their
/// guesses (see [`prism_shared::domain::estimates`]); the plain guess when
/// the calibration cannot be read: an estimate is advice, the job goes on.
async fn calibrated_estimate(deps: &Deps, modality: Modality, size: u64, guessed: f64) -> f64 {
    match deps.estimates.calibration(chrono::Utc::now().date_naive()).await {
        Ok(calibration) => calibration.estimate(modality, size),
        Err(e) => {
            tracing::warn!(error = %e, "the estimate calibration could not be read; the uncalibrated estimate stands");
            guessed
        }
    }
}

pub async fn handle(deps: &Deps, event: SqsEvent) -> SqsBatchResponse {
    // A batch's commands go together: one request per destination queue instead of ten.
    let outbox = Outbox::new(deps.queue.as_ref());
    sqs_batch::process_batch_sending(event, &outbox, Backoff::default(), sqs_batch::AtOnce::All, |msg| handle_message(deps, &outbox, msg))
        .await
}

async fn handle_message(deps: &Deps, outbox: &Outbox<'_>, msg: SqsMessage) -> Result<(), HandlerError> {
    let env: Envelope<Command> = envelope::decode(msg.body.as_deref().unwrap_or_default())?;
    let (Some(job_id), Command::Classify { input, stored }) = (env.job_id, env.body) else {
        return Err(HandlerError::Malformed("expected a job.classify command with a job_id".into()));
    };
    tracing::info!(job_id = %job_id, trace_id = %env.trace_id, uri = %input.uri, "classifying");
    classify_job(deps, outbox, &job_id, input, stored.map(|s| s.into_job())).await
}

/// Classifies the job `stored` is a copy of (as its sender stored it), or
/// reads it when the command carries none. Decisions on a stale copy are
/// safe: the classification is recorded on the copy, which conflicts if the
/// job moved (cancelled, classified by a duplicate), and is then decided
/// again on the job as read.
async fn classify_job(
    deps: &Deps,
    outbox: &Outbox<'_>,
    job_id: &JobId,
    input: InputObject,
    stored: Option<Job>,
) -> Result<(), HandlerError> {
    let job = match stored {
        Some(job) if &job.id == job_id => job,
        _ => deps.jobs.get(job_id).await?.ok_or_else(|| LifecycleError::NotFound(job_id.clone()))?,
    };
    if job.status != JobStatus::Queued {
        tracing::info!(status = %job.status, "job is past classification; duplicate ignored");
        return Ok(());
    }
    let head = match deps.blobs.read_head(&input.uri, SNIFF_BYTES).await {
        Ok(head) => head,
        Err(BlobError::NotFound(uri)) => {
            return fail(deps, &job, JobFailure::new("input_missing", format!("the upload {uri} no longer exists"))).await;
        }
        Err(e) => return Err(e.into()),
    };
    let mut classification = match sniff::classify(&head.bytes, head.size) {
        Ok(c) => c,
        Err(e) => return fail(deps, &job, JobFailure::new(e.code(), e.to_string())).await,
    };
    classification.estimated_seconds =
        calibrated_estimate(deps, classification.modality, head.size, classification.estimated_seconds).await;
    let (modality, mime) = (classification.modality, classification.mime.clone());
    // Recorded first, so even a job that fails below says what it was.
    // On the job as read above: no second read unless it moved meanwhile.
    let classified = [JobEvent::Classified(classification)];
    let recorded = match lifecycle::record_from(deps.jobs.as_ref(), job_id, Some(job.clone()), SOURCE, &classified).await {
        Ok(r) => r,
        Err(LifecycleError::Refused { error, .. }) => {
            tracing::info!(%error, "job changed meanwhile; not routed");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let job = recorded.job();
    if let Some(declared) = job.declared_size
        && declared != head.size
    {
        let message = format!("the upload has {} bytes but {declared} were declared", head.size);
        return fail(deps, job, JobFailure::new("size_mismatch", message)).await;
    }
    let limit = deps.config.limits.for_modality(modality);
    if head.size > limit {
        let message = format!("{modality} of {} bytes is over the limit of {limit}", head.size);
        return fail(deps, job, JobFailure::new("too_large", message)).await;
    }
    if let Some(reason) = sniff::undecoded_mime(&mime) {
        return fail(deps, job, JobFailure::new("unsupported_format", reason)).await;
    }
    // A redelivery after a crash between recording and sending routes again;
    // processors and the workflow function ignore a job already past them.
    if let Recorded::AlreadyApplied(_) = recorded {
        tracing::info!("already classified; routing again");
    }
    let input = InputObject { size: head.size, ..input };
    let (queue_url, body) = match &job.workflow {
        Some(requested) => {
            let def = match workflow::resolve(requested, modality) {
                Ok(def) => def,
                Err(failure) => return fail(deps, job, failure).await,
            };
            let Some(url) = &deps.config.workflow_queue_url else {
                return fail(deps, job, JobFailure::new("no_workflow", "workflows are not deployed in this stack")).await;
            };
            (url.as_str(), Command::StartRun { workflow: def.name.clone() })
        }
        None => {
            let lane = job.priority.lane();
            let Some(url) = deps.config.routes.get(modality, lane) else {
                return fail(deps, job, JobFailure::new("no_processor", format!("no processor handles {modality} content yet"))).await;
            };
            // A small input was read whole to sniff it: it travels with the command.
            let content = (head.size <= Command::MAX_CARRIED_CONTENT as u64 && head.bytes.len() as u64 == head.size).then_some(head.bytes);
            (url, Command::Process { input, modality, mime, action: None, stored: StoredJob::of(job), content })
        }
    };
    let command = Envelope::new(SOURCE, &job.trace_id, Some(job.id.clone()), None, body);
    outbox.send(queue_url, command.to_json()).await?;
    tracing::info!(%modality, workflow = ?job.workflow, "routed");
    if job.workflow.is_none() {
        // Jobs into each lane; the processors count them out (`JobsEnded` by `Lane`).
        metrics::emit(&[("Lane", &lanes::lane_name(modality, job.priority.lane()))], &[Metric::count("JobsQueued")]);
    }
    Ok(())
}

/// Fails `job`, computed on it as last read or written.
async fn fail(deps: &Deps, job: &Job, failure: JobFailure) -> Result<(), HandlerError> {
    tracing::warn!(code = %failure.code, reason = %failure.message, "job failed");
    match lifecycle::record_from(deps.jobs.as_ref(), &job.id, Some(job.clone()), SOURCE, &[JobEvent::Failed(failure)]).await {
        Ok(_) | Err(LifecycleError::Refused { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
