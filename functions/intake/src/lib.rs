//! intake: S3 `ObjectCreated` notifications, delivered through SQS, become jobs.
//!
//! An upload under `uploads/{owner}/{job_id}/…` whose job the API created is
//! attached to that job; any other object under `uploads/` (an operator's
//! drop) gets a job whose id is derived from bucket, key and ETag, so a
//! redelivered notification finds the same job instead of making another.

use aws_lambda_events::s3::S3EventRecord;
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use prism_shared::app::lifecycle::{self, LifecycleError, Recorded};
use prism_shared::app::sqs_batch::{self, Backoff, HandlerError, Outbox};
use prism_shared::app::uploads;
use prism_shared::domain::commands::{Command, StoredJob};
use prism_shared::domain::job::Lane;
use prism_shared::{ConfigError, Envelope, JobEvent, Priority, runtime::config};

pub const SOURCE: &str = "intake";

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
    // A batch's classify commands go together: one request instead of ten.
    let outbox = Outbox::new(deps.queue.as_ref());
    sqs_batch::process_batch_sending(event, &outbox, Backoff::default(), sqs_batch::AtOnce::All, |msg| handle_message(deps, &outbox, msg))
        .await
}

async fn handle_message(deps: &Deps, outbox: &Outbox<'_>, msg: SqsMessage) -> Result<(), HandlerError> {
    let Some(event) = uploads::notification(msg.body.as_deref().unwrap_or_default())? else {
        tracing::info!("acknowledged s3:TestEvent");
        return Ok(());
    };
    for record in &event.records {
        handle_record(deps, outbox, record).await?;
    }
    Ok(())
}

async fn handle_record(deps: &Deps, outbox: &Outbox<'_>, record: &S3EventRecord) -> Result<(), HandlerError> {
    let Some(upload) = uploads::upload_of(record) else {
        tracing::info!(event = ?record.event_name, key = ?record.s3.object.key, "not an upload; ignored");
        return Ok(());
    };
    let input = upload.input();
    let job = uploads::job_for(deps.jobs.as_ref(), &upload, SOURCE).await?;
    let id = job.id.clone();
    tracing::info!(job_id = %id, uri = %upload.uri, size = upload.size, "upload received");
    // On the job as just read or created (a drop's job is created uploaded):
    // no second read.
    let uploaded = [JobEvent::Uploaded { input: input.clone() }];
    let recorded = match lifecycle::record_from(deps.jobs.as_ref(), &id, Some(job), SOURCE, &uploaded).await {
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
    let command = Envelope::new(SOURCE, &job.trace_id, Some(job.id.clone()), None, Command::Classify { input, stored: StoredJob::of(job) });
    outbox.send(deps.config.classify_queue(job.priority), command.to_json()).await?;
    Ok(())
}
