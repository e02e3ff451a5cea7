//! dead-letter: the consumer of every dead-letter queue. A message lands here
//! after its queue's `maxReceiveCount` failed attempts; its job is failed with
//! a reason, so no job ever stays `queued` or `processing` forever.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use prism_shared::app::lifecycle::{self, LifecycleError};
use prism_shared::app::sqs_batch::{self, Backoff};
use prism_shared::domain::commands::Command;
use prism_shared::domain::envelope;
use prism_shared::domain::job::JobFailure;
use prism_shared::runtime::metrics::{self, Metric};
use prism_shared::{JobEvent, JobId, app::uploads};

pub const SOURCE: &str = "dead-letter";

/// Dead letters need no settings of their own.
pub type Deps = prism_shared::ports::Deps<()>;

pub async fn handle(deps: &Deps, event: SqsEvent) -> SqsBatchResponse {
    sqs_batch::process_batch(event, deps.queue.as_ref(), Backoff::default(), |msg| handle_message(deps, msg)).await
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
        jobs.push(uploads::job_for(deps.jobs.as_ref(), &upload, SOURCE).await?);
    }
    Ok(jobs)
}

async fn handle_message(deps: &Deps, msg: SqsMessage) -> Result<(), LifecycleError> {
    let body = msg.body.as_deref().unwrap_or_default();
    let origin = origin(&msg);
    let jobs = jobs_of(deps, body).await?;
    // Counted once the message is understood: a redelivery after a store
    // error counts again, which an alarm on "more than zero" does not mind.
    metrics::emit(&[("Queue", &origin)], &[Metric::count("DeadLetters")]);
    if jobs.is_empty() {
        // Nothing to fail: keep the evidence in the logs, where operators look.
        tracing::error!(%origin, body, "dead letter names no job");
        return Ok(());
    }
    for job_id in jobs {
        let failure = JobFailure::new("retries_exhausted", format!("processing kept failing in {origin} and was given up"));
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
