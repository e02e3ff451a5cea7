//! The steps every processor shares: take a `job.process` command, start the
//! job, read its input within a size limit, report progress at checkpoints
//! (each one also a cancellation check), and finish with a result or a
//! reason. A processor only supplies the work in between.

use bytes::Bytes;

use crate::commands::Command;
use crate::envelope::{self, Envelope};
use crate::error::BlobError;
use crate::job::{InputObject, Job, JobEvent, JobFailure, JobId, Output};
use crate::lifecycle::{self, LifecycleError};
use crate::ports::{BlobStore, EventBus, JobStore};
use crate::results::JobResult;
use crate::sqs_batch::HandlerError;

/// What a `job.process` command asks for.
#[derive(Debug, Clone)]
pub struct ProcessCommand {
    pub job_id: JobId,
    pub trace_id: String,
    pub input: InputObject,
    pub mime: String,
}

impl ProcessCommand {
    pub fn decode(body: &str) -> Result<Self, HandlerError> {
        let env: Envelope<Command> = envelope::decode(body)?;
        match (env.job_id, env.body) {
            (Some(job_id), Command::Process { input, mime, .. }) => Ok(Self { job_id, trace_id: env.trace_id, input, mime }),
            _ => Err(HandlerError::Malformed("expected a job.process command with a job_id".into())),
        }
    }
}

/// A job being processed by `source`.
#[derive(Debug)]
pub struct Run<'a> {
    pub jobs: &'a dyn JobStore,
    pub events: &'a dyn EventBus,
    pub blobs: &'a dyn BlobStore,
    pub source: &'static str,
    pub job_id: JobId,
}

impl<'a> Run<'a> {
    /// Starts the job in `phase`. `None` means there is nothing to do: the job
    /// already finished (a duplicate command), or it was cancelled, which this
    /// records.
    pub async fn start(
        jobs: &'a dyn JobStore,
        events: &'a dyn EventBus,
        blobs: &'a dyn BlobStore,
        source: &'static str,
        job_id: JobId,
        phase: &str,
    ) -> Result<Option<Self>, HandlerError> {
        let run = Self { jobs, events, blobs, source, job_id };
        let job = run.job().await?;
        if job.status.is_terminal() {
            tracing::info!(status = %job.status, "job already finished; duplicate ignored");
            return Ok(None);
        }
        if job.cancel_requested {
            run.record(JobEvent::Cancelled).await?;
            return Ok(None);
        }
        Ok(run.record(JobEvent::Started { phase: phase.to_owned() }).await?.then_some(run))
    }

    async fn job(&self) -> Result<Job, HandlerError> {
        Ok(self.jobs.get(&self.job_id).await?.ok_or_else(|| LifecycleError::NotFound(self.job_id.clone()))?)
    }

    /// Records `event`; `false` when the job had moved on (finished or cancelled elsewhere).
    async fn record(&self, event: JobEvent) -> Result<bool, HandlerError> {
        match lifecycle::record(self.jobs, self.events, &self.job_id, self.source, event).await {
            Ok(_) => Ok(true),
            Err(LifecycleError::Refused { error, .. }) => {
                tracing::info!(%error, "job moved on");
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The whole input, or `None` once the job has been failed because it is
    /// over `limit` bytes or gone.
    pub async fn read_input(&self, input: &InputObject, limit: u64, what: &str) -> Result<Option<Bytes>, HandlerError> {
        match self.blobs.read_all(&input.uri, limit).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(BlobError::TooLarge { size, limit, .. }) => {
                self.fail(JobFailure::new("too_large", format!("{what} of {size} bytes is over the limit of {limit}"))).await?;
                Ok(None)
            }
            Err(BlobError::NotFound(uri)) => {
                self.fail(JobFailure::new("input_missing", format!("the upload {uri} no longer exists"))).await?;
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A checkpoint: stops (recording the cancellation) if a cancel was
    /// requested, otherwise reports `phase` at `percent`. `false` means stop.
    pub async fn checkpoint(&self, phase: &str, percent: u8, eta_s: Option<f64>) -> Result<bool, HandlerError> {
        if self.job().await?.cancel_requested {
            self.record(JobEvent::Cancelled).await?;
            return Ok(false);
        }
        self.record(JobEvent::Progress { phase: phase.to_owned(), progress: percent, eta_s }).await
    }

    pub async fn fail(&self, failure: JobFailure) -> Result<(), HandlerError> {
        tracing::info!(code = %failure.code, reason = %failure.message, "job failed");
        self.record(JobEvent::Failed(failure)).await.map(drop)
    }

    pub async fn complete(&self, result: JobResult, outputs: Vec<Output>) -> Result<(), HandlerError> {
        self.record(JobEvent::Completed { result, outputs }).await.map(drop)
    }

    /// Writes one output under `outputs/{job_id}/{file}` beside the input.
    pub async fn write_output(
        &self,
        input: &InputObject,
        name: &str,
        file: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<Output, HandlerError> {
        let output = Output {
            name: name.to_owned(),
            uri: crate::S3Uri::new(&input.uri.bucket, format!("outputs/{}/{file}", self.job_id)),
            content_type: content_type.to_owned(),
            size: body.len() as u64,
        };
        self.blobs.write(&output.uri, body, content_type).await?;
        Ok(output)
    }
}
