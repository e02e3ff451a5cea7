//! dead-letter: the consumer of every dead-letter queue. A message lands here
//! after its queue's `maxReceiveCount` failed attempts; it is kept in the
//! table for operators (`prism dlq list`, `redrive`), then its job is failed
//! with a reason, so no job ever stays `queued` or `processing` forever.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::Utc;
use prism_shared::app::lifecycle::{self, LifecycleError};
use prism_shared::app::sqs_batch::{self, Backoff};
use prism_shared::domain::commands::Command;
use prism_shared::domain::dead_letters::DeadLetter;
use prism_shared::domain::envelope;
use prism_shared::domain::job::JobFailure;
use prism_shared::domain::joblog::LogLevel;
use prism_shared::runtime::metrics::{self, Metric};
use prism_shared::{JobEvent, JobId, app::uploads};

pub const SOURCE: &str = "dead-letter";

/// Dead letters need no settings of their own.
pub type Deps = prism_shared::ports::Deps<()>;

pub async fn handle(deps: &Deps, event: SqsEvent) -> SqsBatchResponse {
    sqs_batch::process_batch(event, deps.queue.as_ref(), Backoff::default(), sqs_batch::AtOnce::InTurn, |msg| handle_message(deps, msg))
        .await
}

/// The queue a dead letter came from, named after its DLQ (`…-dlq`).
fn origin(msg: &SqsMessage) -> String {
    let name = msg.event_source_arn.as_deref().and_then(|a| a.rsplit(':').next()).unwrap_or("unknown");
    name.strip_suffix("-dlq").unwrap_or(name).to_owned()
}

/// The jobs a dead letter is about: commands carry one in their envelope; a
/// run's job event the workflow function could not take names its run, whose
/// root job fails (the step's own job has already ended);
/// the intake queue's dead letters are S3 notifications, which name uploads,
/// and the jobs of those are found (or created, for a drop intake never got
/// to) as intake would.
async fn jobs_of(deps: &Deps, body: &str) -> Result<Vec<JobId>, LifecycleError> {
    if let Ok(command) = envelope::decode::<Command>(body) {
        return Ok(command.job_id.into_iter().collect());
    }
    if let Ok(event) = envelope::decode::<JobEvent>(body) {
        return Ok(event.run.map(|run| run.run_id).into_iter().collect());
    }
    let Ok(Some(notification)) = uploads::notification(body) else { return Ok(Vec::new()) };
    let mut jobs = Vec::new();
    for upload in notification.records.iter().filter_map(uploads::upload_of) {
        jobs.push(uploads::job_for(deps.jobs.as_ref(), &upload, SOURCE).await?.id);
    }
    Ok(jobs)
}

/// Why the jobs' messages kept failing: the last failed attempt their
/// processor wrote into the first job's log, when it wrote one.
async fn reason(deps: &Deps, jobs: &[JobId], origin: &str) -> Result<String, LifecycleError> {
    let fallback = format!("kept failing in {origin}; no attempt recorded why (a timeout or a crash: see the function's logs)");
    let Some(first) = jobs.first() else { return Ok(format!("{origin}: the message names no job")) };
    let events = deps.jobs.events(first, 0, 1000).await?;
    let last_failure = events.into_iter().rev().find_map(|e| match e.body {
        JobEvent::Logged { lines } => lines.into_iter().rev().find(|l| l.level >= LogLevel::Warn).map(|l| l.message),
        _ => None,
    });
    Ok(last_failure.unwrap_or(fallback))
}

/// The record an operator lists and redrives.
async fn dead_letter(deps: &Deps, msg: &SqsMessage, jobs: &[JobId], origin: &str) -> Result<DeadLetter, LifecycleError> {
    let attribute = |name: &str| msg.attributes.get(name).cloned();
    let owner = match jobs.first() {
        Some(id) => deps.jobs.get(id).await?.map(|job| job.owner),
        None => None,
    };
    Ok(DeadLetter {
        message_id: msg.message_id.clone().unwrap_or_default(),
        dlq: msg.event_source_arn.as_deref().and_then(|a| a.rsplit(':').next()).unwrap_or("unknown").to_owned(),
        source_queue: attribute("DeadLetterQueueSourceArn").and_then(|arn| arn.rsplit(':').next().map(str::to_owned)),
        jobs: jobs.to_vec(),
        owner,
        reason: reason(deps, jobs, origin).await?,
        receive_count: sqs_batch::receive_count(msg),
        dead_lettered_at: Utc::now(),
        body: msg.body.clone().unwrap_or_default(),
    })
}

async fn handle_message(deps: &Deps, msg: SqsMessage) -> Result<(), LifecycleError> {
    let body = msg.body.as_deref().unwrap_or_default();
    let origin = origin(&msg);
    let jobs = jobs_of(deps, body).await?;
    // Kept before the jobs fail, so a failure between leaves the letter to be
    // found again on redelivery (kept once: its message id is its key).
    let letter = dead_letter(deps, &msg, &jobs, &origin).await?;
    if !deps.dead_letters.keep(&letter).await? {
        tracing::info!(message_id = %letter.message_id, "dead letter already kept (a redelivery)");
    }
    // Counted once the message is understood: a redelivery after a store
    // error counts again, which an alarm on "more than zero" does not mind.
    metrics::emit(&[("Queue", &origin)], &[Metric::count("DeadLetters")]);
    if jobs.is_empty() {
        // Nothing to fail: keep the evidence in the logs, where operators look.
        tracing::error!(%origin, body, "dead letter names no job");
        return Ok(());
    }
    for job_id in jobs {
        let failure = JobFailure::new(
            JobFailure::RETRIES_EXHAUSTED,
            format!("processing kept failing in {origin} and was given up: {}", letter.reason),
        );
        tracing::error!(job_id = %job_id, %origin, "dead letter: failing job");
        match lifecycle::record(deps.jobs.as_ref(), &job_id, SOURCE, JobEvent::Failed(failure)).await {
            // Already terminal (it finished on a late attempt) or gone: nothing to fail.
            Ok(recorded) => {
                let modality = recorded.job().modality.map_or("unknown", <&str>::from);
                metrics::emit(
                    &[("Modality", modality), ("Status", "failed"), ("Code", "retries_exhausted")],
                    &[Metric::count("JobsEnded")],
                );
            }
            Err(LifecycleError::Refused { .. } | LifecycleError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
