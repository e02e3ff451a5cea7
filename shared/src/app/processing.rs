//! The steps every processor shares: take a `job.process` command, start the
//! job, read its input within a size limit, report progress at checkpoints
//! (each one also a cancellation check), and finish with a result or a
//! reason. A processor only supplies the work in between.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{NaiveDate, Utc};
use tokio::sync::watch;

use crate::app::lifecycle::{self, LifecycleError};
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};

use crate::app::breakers::{self, Gate};
use crate::app::sqs_batch::{self, AtOnce, Backoff, HandlerError};
use crate::domain::breakers::Dependency;
use crate::domain::commands::Command;
use crate::domain::envelope::{self, Envelope};
use crate::domain::estimates::EstimateTotals;
use crate::domain::job::{InputObject, Job, JobEvent, JobFailure, JobId, Modality, Output};
use crate::domain::joblog::{LogBuffer, LogLevel, LogLine};
use crate::domain::lanes;
use crate::domain::phases::Counts;
use crate::domain::results::JobResult;
use crate::domain::workflow::Action;
use crate::ports::error::{BlobError, Retryable, StoreError};
use crate::ports::{BlobStore, Deps, EstimateStore, JobStore, Queue};
use crate::runtime::metrics::{self, Metric};

/// What a `job.process` command asks for.
#[derive(Debug, Clone)]
pub struct ProcessCommand {
    pub job_id: JobId,
    pub trace_id: String,
    pub input: InputObject,
    pub mime: String,
    /// The workflow step's action, when the command names one.
    pub action: Option<Action>,
    /// The job as the sender stored it, when the command carries it.
    pub stored: Option<Job>,
    /// The whole input, when the command carries it (small inputs).
    pub content: Option<Bytes>,
}

impl ProcessCommand {
    pub fn decode(body: &str) -> Result<Self, HandlerError> {
        let env: Envelope<Command> = envelope::decode(body)?;
        match (env.job_id, env.body) {
            (Some(job_id), Command::Process { input, mime, action, stored, content, .. }) => {
                let stored = stored.map(|stored| stored.into_job()).filter(|job| job.id == job_id);
                // Only content that is the whole input: its size is the object's.
                let content = content.filter(|bytes| bytes.len() as u64 == input.size);
                Ok(Self { job_id, trace_id: env.trace_id, input, mime, action, stored, content })
            }
            _ => Err(HandlerError::Malformed("expected a job.process command with a job_id".into())),
        }
    }
}

/// A processor's handler: every `job.process` command in the batch decoded,
/// its job started in `first_phase` (skipped when it already ended or was
/// cancelled), and handed with its [`Run`] to `work`; failures go back to the
/// queue or on to the DLQ as [`sqs_batch::process_batch`] decides. Work that
/// needs a dependency in `uses` whose circuit breaker is open is put back
/// until the breaker lets it through, spending none of its retries.
///
/// The batch's commands run one after another: see [`process_commands_within`]
/// for a processor whose memory follows its inputs' sizes.
pub async fn process_commands<C, F>(
    deps: &Deps<C>,
    event: SqsEvent,
    source: &'static str,
    first_phase: &str,
    uses: &[Dependency],
    work: F,
) -> SqsBatchResponse
where
    F: AsyncFn(&Run<'_>, &ProcessCommand) -> Result<(), HandlerError>,
{
    process_commands_within(deps, event, source, first_phase, uses, None, work).await
}

/// [`process_commands`], with as many of the batch's commands at once as
/// their inputs fit in `bytes_at_once` together (a command whose input is
/// larger runs alone; `None`: one after another).
pub async fn process_commands_within<C, F>(
    deps: &Deps<C>,
    event: SqsEvent,
    source: &'static str,
    first_phase: &str,
    uses: &[Dependency],
    bytes_at_once: Option<u64>,
    work: F,
) -> SqsBatchResponse
where
    F: AsyncFn(&Run<'_>, &ProcessCommand) -> Result<(), HandlerError>,
{
    let work = &work;
    let calibration = &CalibrationSamples::default();
    let at_once = match bytes_at_once {
        Some(budget) => AtOnce::WithinBytes { budget, size_of: input_size },
        None => AtOnce::InTurn,
    };
    let response = sqs_batch::process_batch(event, deps.queue.as_ref(), Backoff::default(), at_once, |message: SqsMessage| async move {
        let attempt = sqs_batch::receive_count(&message);
        let command = ProcessCommand::decode(message.body.as_deref().unwrap_or_default())?;
        let gate = breakers::admit(deps.breakers.as_ref(), &deps.breaker_policy, uses).await;
        let Some(run) = Run::for_command(deps, source, &command, first_phase, calibration).await? else { return Ok(()) };
        let probes = match gate {
            Gate::Wait { dependency, until } => return run.wait_for(deps.queue.as_ref(), &message, dependency, until).await,
            Gate::Go { probes } => probes,
        };
        let outcome = work(&run, &command).await;
        match &outcome {
            Err(error) if error.is_retryable() => {
                metrics::emit(&[("Function", source)], &[Metric::count("AttemptsFailed")]);
                if let Some(dependency) = error.dependency() {
                    breakers::failed(deps.breakers.as_ref(), &deps.breaker_policy, dependency, &with_causes(error)).await;
                }
                run.note_failed_attempt(attempt, error).await;
            }
            // The dependencies answered, even if the input was bad.
            _ => breakers::succeeded(deps.breakers.as_ref(), &probes).await,
        }
        outcome
    })
    .await;
    calibration.write(deps.estimates.as_ref()).await;
    response
}

/// Completed jobs' times, gathered over a batch and added to the estimate
/// calibration when the batch is done: one write per modality and day
/// instead of one per job. A sample is only statistics, so an invocation
/// that dies before the write costs the calibration those samples and the
/// jobs nothing, as a failed write always did.
#[derive(Debug, Default)]
pub struct CalibrationSamples {
    totals: Mutex<HashMap<(Modality, NaiveDate), EstimateTotals>>,
}

impl CalibrationSamples {
    fn add(&self, modality: Modality, day: NaiveDate, sample: EstimateTotals) {
        self.totals.lock().unwrap_or_else(PoisonError::into_inner).entry((modality, day)).or_default().add(&sample);
    }

    /// Adds what was gathered to `store`, and forgets it.
    pub async fn write(&self, store: &dyn EstimateStore) {
        let totals = std::mem::take(&mut *self.totals.lock().unwrap_or_else(PoisonError::into_inner));
        for ((modality, day), totals) in totals {
            if let Err(e) = store.add(modality, day, totals).await {
                tracing::warn!(error = %e, %modality, jobs = totals.jobs, "the jobs' times were not added to the estimate calibration");
            }
        }
    }
}

/// The size of the input a `job.process` message names; one that does not
/// decode counts as too large to share (it fails at once anyway).
fn input_size(message: &SqsMessage) -> u64 {
    ProcessCommand::decode(message.body.as_deref().unwrap_or_default()).map_or(u64::MAX, |command| command.input.size)
}

/// How often a run writes progress at most. A checkpoint sooner than this
/// after the last write is held back and written with the next write (a
/// later checkpoint, or the job's end), phases and counts intact. A job of
/// milliseconds then costs one write for its start and one for its end
/// instead of one per checkpoint and one per batch of log lines; what it
/// costs is that a cancel is noticed up to this much later.
pub const WRITE_EVERY: Duration = Duration::from_secs(1);

/// How many events a run holds back at most (one write, one transaction,
/// stays well inside DynamoDB's 100 items).
const MAX_HELD: usize = 16;

/// A job being processed by `source`.
#[derive(Debug)]
pub struct Run<'a> {
    pub jobs: &'a dyn JobStore,
    pub blobs: &'a dyn BlobStore,
    pub source: &'static str,
    pub job_id: JobId,
    /// The job as this run last read or wrote it: the next events are applied
    /// to it and committed on its seq, with no read first; a conflict (another
    /// writer got there first: a cancel request, the sweeper) falls back to
    /// reading the job again, and that read is the cancellation check.
    last_known: Mutex<Option<Job>>,
    /// Log lines written since the last write, within the job's log cap.
    log: Mutex<LogBuffer>,
    /// Progress held back since the last write (one event per phase, the
    /// latest), written with the next one: see [`WRITE_EVERY`].
    held: Mutex<Vec<JobEvent>>,
    /// When this run last wrote the job.
    last_write: Mutex<Instant>,
    /// How often it writes progress at most: [`WRITE_EVERY`] unless set.
    write_every: Duration,
    /// Where a completed job's time goes to calibrate the classifier's estimates.
    calibration: Option<&'a CalibrationSamples>,
}

impl<'a> Run<'a> {
    /// Starts the job `command` names, with `deps`' ports; see [`Run::start`].
    /// Its time, if it completes, goes to `calibration`.
    pub async fn for_command<C>(
        deps: &'a Deps<C>,
        source: &'static str,
        command: &ProcessCommand,
        phase: &str,
        calibration: &'a CalibrationSamples,
    ) -> Result<Option<Self>, HandlerError> {
        let input = &command.input;
        tracing::info!(job_id = %command.job_id, trace_id = %command.trace_id, uri = %input.uri, source, "processing");
        let (jobs, blobs, job_id) = (deps.jobs.as_ref(), deps.blobs.as_ref(), command.job_id.clone());
        let run = Self::start_from(jobs, blobs, source, job_id, phase, command.stored.clone()).await?;
        Ok(run.map(|run| Self { calibration: Some(calibration), ..run }))
    }

    /// Starts the job in `phase`. `None` means there is nothing to do: the job
    /// already finished (a duplicate command), or it was cancelled, which this
    /// records.
    pub async fn start(
        jobs: &'a dyn JobStore,
        blobs: &'a dyn BlobStore,
        source: &'static str,
        job_id: JobId,
        phase: &str,
    ) -> Result<Option<Self>, HandlerError> {
        Self::start_from(jobs, blobs, source, job_id, phase, None).await
    }

    /// [`Run::start`] from `stored`, the job as its sender stored it, when
    /// given: the start is then committed on it with no read, and read only
    /// if the job moved since (a cancel request, a duplicate command of a
    /// job that went on), which decides as a read would have.
    pub async fn start_from(
        jobs: &'a dyn JobStore,
        blobs: &'a dyn BlobStore,
        source: &'static str,
        job_id: JobId,
        phase: &str,
        stored: Option<Job>,
    ) -> Result<Option<Self>, HandlerError> {
        let run = Self {
            jobs,
            blobs,
            source,
            job_id,
            last_known: Mutex::new(None),
            log: Mutex::new(LogBuffer::default()),
            held: Mutex::new(Vec::new()),
            last_write: Mutex::new(Instant::now()),
            write_every: WRITE_EVERY,
            calibration: None,
        };
        let job = match stored {
            Some(job) => {
                run.remember(Some(job.clone()));
                job
            }
            None => run.job().await?,
        };
        if job.status.is_terminal() {
            tracing::info!(status = %job.status, "job already finished; duplicate ignored");
            return Ok(None);
        }
        if job.cancel_requested {
            run.record(JobEvent::Cancelled).await?;
            return Ok(None);
        }
        if !run.record(JobEvent::Started { phase: phase.to_owned() }).await? {
            return Ok(None);
        }
        // The job as stored now (a copy that moved was read again): its log's length.
        let log_lines = run.last_known.lock().unwrap_or_else(PoisonError::into_inner).as_ref().map_or(job.log_lines, |job| job.log_lines);
        *run.log.lock().unwrap_or_else(PoisonError::into_inner) = LogBuffer::for_job(log_lines);
        Ok(Some(run))
    }

    /// This run writing progress at most every `every` instead of [`WRITE_EVERY`]
    /// (`Duration::ZERO`: at every checkpoint).
    #[must_use]
    pub fn writing_every(self, every: Duration) -> Self {
        Self { write_every: every, ..self }
    }

    async fn job(&self) -> Result<Job, HandlerError> {
        let job = self.jobs.get(&self.job_id).await?.ok_or_else(|| LifecycleError::NotFound(self.job_id.clone()))?;
        self.remember(Some(job.clone()));
        Ok(job)
    }

    fn remember(&self, job: Option<Job>) {
        *self.last_known.lock().unwrap_or_else(PoisonError::into_inner) = job;
    }

    /// Records `event`; `false` when the job had moved on (finished or cancelled elsewhere).
    async fn record(&self, event: JobEvent) -> Result<bool, HandlerError> {
        self.write(Some(event), false).await
    }

    /// Writes what is held back (progress, log lines; with `last`, the
    /// "lines dropped" line) and `event`, as one change. `false` when the
    /// job moved on: finished elsewhere, or cancelled, which this records
    /// unless `event` ends the job anyway.
    async fn write(&self, event: Option<JobEvent>, last: bool) -> Result<bool, HandlerError> {
        let mut events = std::mem::take(&mut *self.held.lock().unwrap_or_else(PoisonError::into_inner));
        let lines = self.log.lock().unwrap_or_else(PoisonError::into_inner).take(last, Utc::now());
        if !lines.is_empty() {
            events.push(JobEvent::Logged { lines });
        }
        let ending = event.as_ref().is_some_and(JobEvent::is_terminal);
        events.extend(event);
        if events.is_empty() {
            return Ok(true);
        }
        match self.write_events(events.clone(), ending).await {
            Err(e) => {
                // Nothing was stored: what was held back waits for the next write.
                events.retain(|e| matches!(e, JobEvent::Progress { .. } | JobEvent::Logged { .. }));
                *self.held.lock().unwrap_or_else(PoisonError::into_inner) = events;
                Err(e)
            }
            written => written,
        }
    }

    async fn write_events(&self, mut events: Vec<JobEvent>, ending: bool) -> Result<bool, HandlerError> {
        let known = self.last_known.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(known) = known {
            // Committed on the seq it was computed from, so a job that moved
            // meanwhile conflicts (`None`), or refuses on what may be a stale
            // copy, and is read again below. A store error is not retried
            // here: the message's redelivery redoes the work from the job as
            // stored (a transaction stores all of it or none).
            match lifecycle::record_all_on(self.jobs, &known, self.source, &events).await {
                Ok(Some(job)) => return Ok(self.wrote(job)),
                Ok(None) | Err(LifecycleError::Refused { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let job = self.job().await?;
        let cancelling = job.cancel_requested && !job.status.is_terminal() && !ending;
        if cancelling {
            // What was held back is moot; the log lines stay with the job.
            events.retain(|e| matches!(e, JobEvent::Logged { .. }));
            events.push(JobEvent::Cancelled);
        }
        match lifecycle::record_from(self.jobs, &self.job_id, Some(job), self.source, &events).await {
            Ok(recorded) => Ok(self.wrote(recorded.job().clone()) && !cancelling),
            Err(LifecycleError::Refused { error, .. }) => {
                tracing::info!(%error, "job moved on");
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Remembers `job` as just written; `true`.
    fn wrote(&self, job: Job) -> bool {
        self.remember(Some(job));
        *self.last_write.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
        true
    }

    /// Holds `event` back for the next write, after the log lines written
    /// before it (so the log keeps the order things happened in); a phase's
    /// progress replaces the same phase's progress held back just before it.
    /// `true` when so much is held that it should be written now.
    fn hold(&self, event: JobEvent) -> bool {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let lines = self.log.lock().unwrap_or_else(PoisonError::into_inner).take(false, Utc::now());
        if !lines.is_empty() {
            held.push(JobEvent::Logged { lines });
        }
        if let (JobEvent::Progress { phase, .. }, Some(JobEvent::Progress { phase: last_phase, .. })) = (&event, held.last())
            && phase == last_phase
        {
            held.pop();
        }
        held.push(event);
        held.len() >= MAX_HELD
    }

    /// Writes a line to the job's log (and to the function's own log). Lines
    /// are recorded at the next checkpoint and before the job ends; past the
    /// job's cap they are counted, and the last flush says how many.
    pub fn log(&self, level: LogLevel, message: impl Into<String>, fields: &[(&str, serde_json::Value)]) {
        let message = message.into();
        match level {
            LogLevel::Debug => tracing::debug!(job_log = true, ?fields, "{message}"),
            LogLevel::Info => tracing::info!(job_log = true, ?fields, "{message}"),
            LogLevel::Warn => tracing::warn!(job_log = true, ?fields, "{message}"),
            LogLevel::Error => tracing::error!(job_log = true, ?fields, "{message}"),
        }
        let line = fields.iter().fold(LogLine::new(level, message, Utc::now()), |line, (name, value)| line.field(name, value.clone()));
        self.log.lock().unwrap_or_else(PoisonError::into_inner).push(line);
    }

    /// Writes what is held back (progress, log lines) now; with `last`, the
    /// "N lines dropped" line too. A job that ended meanwhile keeps no more
    /// lines, which is not an error.
    async fn flush(&self, last: bool) -> Result<(), HandlerError> {
        self.write(None, last).await.map(drop)
    }

    /// Writes why an attempt failed into the job's log, where its owner sees
    /// the retries and a dead letter finds its reason. Best effort: the
    /// attempt's own error is what goes back to the queue either way.
    async fn note_failed_attempt(&self, attempt: u32, error: &HandlerError) {
        self.log(LogLevel::Warn, format!("attempt {attempt} failed: {}", with_causes(error)), &[("attempt", attempt.into())]);
        if let Err(e) = self.flush(false).await {
            tracing::warn!(error = %e, "could not write the failed attempt into the job's log");
        }
    }

    /// Puts the message's work back until `until`, when `dependency`'s breaker
    /// lets it through: sent again as a new message, so waiting spends none
    /// of its receives. The job's phase says what it waits for.
    async fn wait_for(
        &self,
        queue: &dyn Queue,
        message: &SqsMessage,
        dependency: Dependency,
        until: chrono::DateTime<Utc>,
    ) -> Result<(), HandlerError> {
        let queue_arn = message.event_source_arn.as_deref().ok_or_else(|| HandlerError::Malformed("no event source ARN".into()))?;
        let delay = (until - Utc::now()).to_std().unwrap_or_default().max(Duration::from_secs(1));
        self.log(
            LogLevel::Warn,
            format!("waiting {} s: {dependency} unavailable (its circuit breaker is open); no attempt spent", delay.as_secs()),
            &[("dependency", dependency.to_string().into())],
        );
        // Written now whatever the interval: the run ends here.
        let waiting = JobEvent::Progress { phase: format!("waiting: {dependency} unavailable"), progress: 0, eta_s: None, counts: None };
        if !self.write(Some(waiting), false).await? {
            return Ok(());
        }
        queue.send_again(queue_arn, message.body.clone().unwrap_or_default(), delay).await?;
        Ok(())
    }

    /// The whole input (the command's own copy when it carries one, else
    /// the object), or `None` once the job has been failed because it is
    /// over `limit` bytes or gone.
    pub async fn read_input(&self, command: &ProcessCommand, limit: u64, what: &str) -> Result<Option<Bytes>, HandlerError> {
        if let Some(content) = &command.content
            && content.len() as u64 <= limit
        {
            return Ok(Some(content.clone()));
        }
        match self.blobs.read_all(&command.input.uri, limit).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) => self.fail_for_input(e, what).await.map(|()| None),
        }
    }

    /// Streams the input into the file at `path` (for tools that need a
    /// seekable file); `false` once the job has been failed because it is
    /// over `limit` bytes or gone.
    pub async fn download_input(&self, input: &InputObject, path: &std::path::Path, limit: u64, what: &str) -> Result<bool, HandlerError> {
        match self.blobs.download(&input.uri, path, limit).await {
            Ok(_) => Ok(true),
            Err(e) => self.fail_for_input(e, what).await.map(|()| false),
        }
    }

    /// Fails the job for an input over its limit or gone (both properties of
    /// the upload); any other error goes back to the caller to retry.
    async fn fail_for_input(&self, error: BlobError, what: &str) -> Result<(), HandlerError> {
        let failure = match error {
            BlobError::TooLarge { size, limit, .. } => {
                JobFailure::new("too_large", format!("{what} of {size} bytes is over the limit of {limit}"))
            }
            BlobError::NotFound(uri) => JobFailure::new("input_missing", format!("the upload {uri} no longer exists")),
            e => return Err(e.into()),
        };
        self.fail(failure).await
    }

    /// A checkpoint: reports `phase` at `percent` (held back for the next
    /// write when the last was under [`WRITE_EVERY`] ago), and stops,
    /// recording the cancellation, if the write finds a cancel requested.
    /// `false` means stop.
    pub async fn checkpoint(&self, phase: &str, percent: u8, eta_s: Option<f64>) -> Result<bool, HandlerError> {
        self.checkpoint_counted(phase, percent, eta_s, None).await
    }

    /// [`Self::checkpoint`] with the phase's own counts (pages, keyframes).
    pub async fn checkpoint_counted(
        &self,
        phase: &str,
        percent: u8,
        eta_s: Option<f64>,
        counts: Option<Counts>,
    ) -> Result<bool, HandlerError> {
        let full = self.hold(JobEvent::Progress { phase: phase.to_owned(), progress: percent, eta_s, counts });
        if !full && self.last_write.lock().unwrap_or_else(PoisonError::into_inner).elapsed() < self.write_every {
            return Ok(true);
        }
        self.write(None, false).await
    }

    /// Runs CPU-bound `work` on a blocking thread while reporting its progress
    /// (a fraction 0–1 it publishes through [`Progress`]) as `phase` between
    /// `from` and `to` percent, at most every `every`. Each report is also a
    /// cancellation check: a cancel sets [`Progress::cancelled`] for the work
    /// to notice.
    ///
    /// `Some(value)` when the work succeeded. `None` when there is nothing more
    /// to do: the job was cancelled or moved on, or the work failed and the
    /// job has been failed with the error's code (a panic with
    /// [`WorkError::PANIC_CODE`]: it is a property of the input, not a reason
    /// to retry).
    pub async fn blocking<T, E, F>(&self, phase: &str, (from, to): (u8, u8), every: Duration, work: F) -> Result<Option<T>, HandlerError>
    where
        T: Send + 'static,
        E: WorkError + Send + 'static,
        F: FnOnce(&Progress) -> Result<T, E> + Send + 'static,
    {
        let (tx, mut rx) = watch::channel(Reported::default());
        let progress = Progress { fraction: tx, cancelled: Arc::new(AtomicBool::new(false)) };
        let cancelled = Arc::clone(&progress.cancelled);
        let mut task = tokio::task::spawn_blocking(move || work(&progress));
        let mut last_report = Instant::now();
        let mut moved_on = false;
        let mut recorded_counts = None;
        let joined = loop {
            tokio::select! {
                joined = &mut task => break joined,
                changed = rx.changed(), if !moved_on => {
                    if changed.is_err() || last_report.elapsed() < every {
                        continue;
                    }
                    last_report = Instant::now();
                    let reported = *rx.borrow_and_update();
                    let percent = from + ((to.saturating_sub(from)) as f32 * reported.fraction.clamp(0.0, 1.0)) as u8;
                    recorded_counts = reported.counts;
                    if !self.checkpoint_counted(phase, percent, None, reported.counts).await? {
                        cancelled.store(true, Ordering::Relaxed);
                        moved_on = true;
                    }
                }
            }
        };
        if moved_on {
            return Ok(None);
        }
        let failure = match joined {
            Ok(Ok(value)) => {
                // Counted work that finished between reports still shows its
                // final counts (a document's pages) in the job's phases.
                let counts = rx.borrow().counts;
                if counts.is_some() && counts != recorded_counts && !self.checkpoint_counted(phase, to, None, counts).await? {
                    return Ok(None);
                }
                return Ok(Some(value));
            }
            // The work saw a cancellation that a checkpoint has already recorded.
            Ok(Err(e)) if e.is_cancellation() => return Ok(None),
            Ok(Err(e)) => match e.unavailable() {
                Some(dependency) => return Err(HandlerError::Unavailable { dependency, reason: e.to_string() }),
                None => JobFailure::new(e.code(), e.to_string()),
            },
            Err(e) => match e.try_into_panic() {
                Ok(panic) => JobFailure::new(E::PANIC_CODE, panic_message(panic.as_ref())),
                // Only a runtime shutting down cancels a blocking task: let the message come back.
                Err(e) => return Err(HandlerError::Interrupted(e.to_string())),
            },
        };
        self.fail(failure).await?;
        Ok(None)
    }

    pub async fn fail(&self, failure: JobFailure) -> Result<(), HandlerError> {
        self.log(LogLevel::Error, format!("failed: {}", failure.message), &[("code", failure.code.clone().into())]);
        let code = failure.code.clone();
        if self.write(Some(JobEvent::Failed(failure)), true).await? {
            self.emit_ended(&[("Code", &code)]);
        }
        Ok(())
    }

    /// The metrics of the job this run just ended: one per job, by modality,
    /// status and lane (and `extra` dimensions), with its processing time.
    fn emit_ended(&self, extra: &[(&str, &str)]) {
        let known = self.last_known.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(job) = known.as_ref() else { return };
        let modality = job.modality.map_or("unknown", <&str>::from);
        let lane = job.modality.map_or_else(|| "unknown".to_owned(), |m| lanes::lane_name(m, job.priority.lane()));
        let status: &str = job.status.into();
        let dimensions: Vec<(&str, &str)> =
            [("Modality", modality), ("Status", status), ("Lane", lane.as_str())].into_iter().chain(extra.iter().copied()).collect();
        let mut measured = vec![Metric::count("JobsEnded")];
        if let Some(first) = job.phases.all().first() {
            measured.push(Metric::millis("ProcessingMs", (Utc::now() - first.started_at).num_milliseconds() as f64));
        }
        metrics::emit(&dimensions, &measured);
    }

    /// Completes the job; a result too large to record fails it instead
    /// (`result_too_large`), since storing it again can never succeed.
    pub async fn complete(&self, result: JobResult, outputs: Vec<Output>) -> Result<(), HandlerError> {
        match self.write(Some(JobEvent::Completed { result, outputs }), true).await {
            Err(HandlerError::Lifecycle(LifecycleError::Store(StoreError::Rejected(reason)))) => {
                self.fail(JobFailure::new("result_too_large", format!("the result could not be recorded: {reason}"))).await
            }
            Ok(true) => {
                self.emit_ended(&[]);
                self.calibrate();
                Ok(())
            }
            other => other.map(drop),
        }
    }

    /// Adds the completed job's time, against what the uncalibrated guess
    /// for its size said, to its modality's totals (written when the batch
    /// is done).
    fn calibrate(&self) {
        let Some(calibration) = self.calibration else { return };
        let Some(job) = self.last_known.lock().unwrap_or_else(PoisonError::into_inner).clone() else { return };
        let (Some(modality), Some(input), Some(estimated), Some(error)) =
            (job.modality, job.input.as_ref(), job.estimated_s, job.estimate_error_s)
        else {
            return;
        };
        let guessed = crate::content::sniff::estimate_seconds(modality, input.size);
        calibration.add(modality, Utc::now().date_naive(), EstimateTotals::one(guessed, (estimated + error).max(0.0)));
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

/// What a processor's work fails with: the code its job ends with, and
/// whether it only stopped because the job was cancelled.
pub trait WorkError: std::error::Error {
    /// The job failure code a panic in the work ends the job with.
    const PANIC_CODE: &'static str;

    /// The job failure code (`corrupt_audio`, `too_many_pages`, …).
    fn code(&self) -> &'static str;

    /// Whether the work stopped because it saw [`Progress::cancelled`]: the
    /// cancellation is already recorded, so the job is not failed. Errors say
    /// so with the code `cancelled`.
    fn is_cancellation(&self) -> bool {
        self.code() == "cancelled"
    }

    /// The dependency this error says is unavailable (a tool that cannot be
    /// started): the work is retried and the dependency's breaker told,
    /// instead of failing the job for what is not its input's fault.
    fn unavailable(&self) -> Option<Dependency> {
        None
    }
}

/// What blocking work last reported.
#[derive(Debug, Clone, Copy, Default)]
struct Reported {
    fraction: f32,
    counts: Option<Counts>,
}

/// What blocking work sees of its job: where to report progress and whether
/// to stop.
#[derive(Debug)]
pub struct Progress {
    fraction: watch::Sender<Reported>,
    cancelled: Arc<AtomicBool>,
}

impl Progress {
    /// A handle for work outside a job (benchmarks, the CLI).
    pub fn detached() -> Self {
        Self { fraction: watch::channel(Reported::default()).0, cancelled: Arc::new(AtomicBool::new(false)) }
    }

    /// Reports `fraction` (0–1) of the work as done; cheap enough to call often.
    pub fn report(&self, fraction: f32) {
        self.fraction.send_replace(Reported { fraction, counts: None });
    }

    /// Reports `processed` of `total` units (pages, keyframes) of the phase
    /// done, which is also the fraction done.
    pub fn report_count(&self, processed: u64, total: u64) {
        let fraction = if total == 0 { 1.0 } else { processed.min(total) as f32 / total as f32 };
        self.report_counted(fraction, processed, total);
    }

    /// Reports `fraction` of the work done and the phase's own counts, where
    /// the counted units are only part of the work (keyframes of a video
    /// whose probe and audio come before and after them).
    pub fn report_counted(&self, fraction: f32, processed: u64, total: u64) {
        self.fraction.send_replace(Reported { fraction, counts: Some(Counts::new(processed, total)) });
    }

    /// Whether the job was cancelled: the work should stop soon.
    pub fn cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
}

/// An error and each of its causes, `: `-separated, skipping a cause whose
/// text its effect already shows. The SDK's errors say only "service error"
/// themselves; their causes carry the service's code and message.
pub fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = e.source();
    }
    text
}

/// The text of a panic payload.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic.downcast_ref::<&str>().map(|s| (*s).to_owned()).or_else(|| panic.downcast_ref::<String>().cloned());
    format!("the decoder panicked: {}", text.unwrap_or_else(|| "no message".into()))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::domain::job::{JobStatus, Priority};
    use crate::testing::memory::{MemoryBlobStore, MemoryJobStore};

    /// What a processor's work might fail with.
    #[derive(Debug, thiserror::Error)]
    enum TestError {
        #[error("cancelled")]
        Cancelled,
        #[error("the file is odd")]
        Odd,
    }

    impl WorkError for TestError {
        const PANIC_CODE: &'static str = "corrupt_test";

        fn code(&self) -> &'static str {
            match self {
                Self::Cancelled => "cancelled",
                Self::Odd => "odd_file",
            }
        }
    }

    async fn queued_job(jobs: &MemoryJobStore) -> JobId {
        let id = JobId::new_random();
        let upload = format!("s3://b/uploads/o/{id}/f").parse().expect("uri");
        let job = Job::new(id.clone(), "o".into(), Priority::Normal, upload, "t".into(), Utc::now());
        jobs.create(&job, &[crate::JobEventEnvelope::for_job("test", &job, job.created_event())]).await.expect("create");
        id
    }

    #[tokio::test]
    async fn a_start_from_the_stored_job_reads_nothing_and_a_stale_copy_decides_as_a_read_would() {
        let (jobs, blobs) = (MemoryJobStore::default(), MemoryBlobStore::default());
        async fn stored(jobs: &MemoryJobStore, id: &JobId) -> Job {
            jobs.get(id).await.expect("get").expect("job")
        }

        // As stored: started with no read.
        let id = queued_job(&jobs).await;
        let copy = stored(&jobs, &id).await;
        let reads = jobs.reads();
        let run = Run::start_from(&jobs, &blobs, "test", id.clone(), "working", Some(copy)).await.expect("start");
        assert!(run.is_some());
        assert_eq!(jobs.reads(), reads, "the start was committed on the copy");
        assert_eq!(stored(&jobs, &id).await.status, JobStatus::Processing);

        // Cancel requested after the copy: the start conflicts, reads, and records the cancel.
        let id = queued_job(&jobs).await;
        let copy = stored(&jobs, &id).await;
        lifecycle::record(&jobs, &id, "api", JobEvent::CancelRequested).await.expect("cancel");
        let run = Run::start_from(&jobs, &blobs, "test", id.clone(), "working", Some(copy)).await.expect("start");
        assert!(run.is_none());
        assert_eq!(stored(&jobs, &id).await.status, JobStatus::Cancelled);

        // Finished after the copy (a duplicate command): nothing is recorded.
        let id = queued_job(&jobs).await;
        let copy = stored(&jobs, &id).await;
        let first = Run::start(&jobs, &blobs, "test", id.clone(), "working").await.expect("start").expect("started");
        first.fail(JobFailure::new("test", "ended elsewhere")).await.expect("fail");
        let ended = stored(&jobs, &id).await;
        let run = Run::start_from(&jobs, &blobs, "test", id.clone(), "working", Some(copy)).await.expect("start");
        assert!(run.is_none());
        assert_eq!(stored(&jobs, &id).await, ended, "the ended job is left as it was");
    }

    #[tokio::test]
    async fn a_cancel_during_blocking_work_stops_it_and_ends_the_job_cancelled() {
        let (jobs, blobs) = (MemoryJobStore::default(), MemoryBlobStore::default());
        let id = queued_job(&jobs).await;
        let run = Run::start(&jobs, &blobs, "test", id.clone(), "working").await.expect("start").expect("started");
        let work = |progress: &Progress| {
            let started = Instant::now();
            let mut step = 0u32;
            while !progress.cancelled() && started.elapsed() < Duration::from_secs(10) {
                step += 1;
                progress.report((step % 100) as f32 / 100.0);
                std::thread::sleep(Duration::from_millis(5));
            }
            if progress.cancelled() { Err(TestError::Cancelled) } else { Ok(()) }
        };
        let cancel = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let job = jobs.get(&id).await.expect("get").expect("job");
            lifecycle::request_cancel(&jobs, &job, "api").await.expect("cancel requested")
        };
        let (outcome, _) = tokio::join!(run.blocking("working", (10, 90), Duration::ZERO, work), cancel);
        assert!(outcome.expect("no store error").is_none(), "the run reports that the job moved on");
        let job = jobs.get(&id).await.expect("get").expect("job");
        assert_eq!(job.status, JobStatus::Cancelled);
        // The progress held back since the start is moot once the job is cancelled.
        let logged: Vec<&str> = jobs.events(&id, 0, 1000).await.expect("events").iter().map(|e| e.body.event_type()).collect();
        assert_eq!(logged, ["job.created", "job.started", "job.cancel_requested", "job.cancelled"]);
    }

    #[tokio::test]
    async fn a_failed_attempt_is_written_into_the_jobs_log_and_the_message_retried() {
        let jobs = std::sync::Arc::new(MemoryJobStore::default());
        let event: SqsEvent = crate::testing::sample_event("sqs-process-text-command.json");
        let (id, _) = crate::testing::queued_job(jobs.as_ref(), "0196f0a0-0000-7000-8000-00000000c1a5", "notes.txt").await;
        let deps = crate::testing::memory_deps(jobs.clone(), std::sync::Arc::new(MemoryBlobStore::default()), ());
        let unavailable = async |_: &Run<'_>, _: &ProcessCommand| -> Result<(), HandlerError> {
            Err(HandlerError::Blob(BlobError::Unavailable("S3 said SlowDown".into())))
        };
        let response = process_commands(&deps, event, "test", "reading", &[], unavailable).await;
        assert_eq!(response.batch_item_failures.len(), 1, "the message goes back to be retried");
        let lines: Vec<LogLine> = jobs
            .events(&id, 0, 100)
            .await
            .expect("events")
            .into_iter()
            .filter_map(|e| match e.body {
                JobEvent::Logged { lines } => Some(lines),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0].level, LogLevel::Warn);
        assert!(lines[0].message.starts_with("attempt 1 failed: ") && lines[0].message.contains("SlowDown"), "{}", lines[0].message);
        assert_eq!(jobs.get(&id).await.expect("get").expect("job").status, JobStatus::Processing, "not failed: retried");
    }

    /// The sample `job.process` command, for job `id`.
    fn command_for(id: &str) -> SqsEvent {
        let mut event: SqsEvent = crate::testing::sample_event("sqs-process-text-command.json");
        let body = event.records[0].body.take().expect("body");
        event.records[0].body = Some(body.replace("0196f0a0-0000-7000-8000-00000000c1a5", id));
        event
    }

    #[tokio::test]
    async fn an_outage_opens_the_breaker_later_work_waits_without_spending_a_retry_and_a_probe_closes_it() {
        use crate::domain::breakers::{BreakerPolicy, BreakerState};
        use crate::ports::BreakerStore;
        use crate::testing::memory::{MemoryBreakers, MemoryQueue};
        use std::sync::atomic::AtomicU32;

        let jobs = Arc::new(MemoryJobStore::default());
        let (queue, breakers) = (Arc::new(MemoryQueue::default()), Arc::new(MemoryBreakers::default()));
        let mut deps = crate::testing::memory_deps(jobs.clone(), Arc::new(MemoryBlobStore::default()), ());
        (deps.queue, deps.breakers) = (queue.clone(), breakers.clone());
        deps.breaker_policy = BreakerPolicy { threshold: 2, cool_down: Duration::from_secs(30), ..BreakerPolicy::default() };
        let ids = ["0196f0a0-0000-7000-8000-0000000000b1", "0196f0a0-0000-7000-8000-0000000000b2", "0196f0a0-0000-7000-8000-0000000000b3"];
        for id in ids {
            crate::testing::queued_job(jobs.as_ref(), id, "notes.txt").await;
        }
        let attempts = AtomicU32::new(0);
        let s3_down = async |_: &Run<'_>, _: &ProcessCommand| -> Result<(), HandlerError> {
            attempts.fetch_add(1, Ordering::Relaxed);
            Err(HandlerError::Blob(BlobError::Unavailable("S3 said InternalError".into())))
        };
        let uses = [Dependency::S3];

        for id in &ids[..2] {
            let response = process_commands(&deps, command_for(id), "test", "reading", &uses, s3_down).await;
            assert_eq!(response.batch_item_failures.len(), 1, "failures before it opens are retried as usual");
        }
        let open = breakers.get(Dependency::S3).await.expect("get").expect("stored");
        assert_eq!(open.state, BreakerState::Open);
        assert!(open.last_error.as_deref().is_some_and(|e| e.contains("InternalError")), "{open:?}");

        let waiting = command_for(ids[2]);
        let body = waiting.records[0].body.clone();
        let response = process_commands(&deps, waiting, "test", "reading", &uses, s3_down).await;
        assert!(response.batch_item_failures.is_empty(), "acknowledged: waiting spends no receive");
        assert_eq!(attempts.load(Ordering::Relaxed), 2, "the work did not run");
        let sent = queue.sent();
        assert_eq!(sent.len(), 1, "put back as a new message");
        assert_eq!((sent[0].queue_url.as_str(), Some(&sent[0].body)), ("arn:aws:sqs:us-east-1:000000000000:prism-dev-text", body.as_ref()));
        assert!(
            (Duration::from_secs(28)..=Duration::from_secs(30)).contains(&sent[0].delay),
            "until the cool-down ends: {:?}",
            sent[0].delay
        );
        let job = jobs.get(&ids[2].parse().expect("id")).await.expect("get").expect("job");
        assert_eq!(job.phase, "waiting: s3 unavailable");

        // The cool-down is over: the next work probes, and its success closes the breaker.
        let over =
            crate::domain::breakers::Breaker { until: Some(Utc::now() - chrono::Duration::seconds(1)), version: open.version + 1, ..open };
        assert!(breakers.put(&over).await.expect("put"));
        let s3_back = async |_: &Run<'_>, _: &ProcessCommand| -> Result<(), HandlerError> { Ok(()) };
        let response = process_commands(&deps, command_for(ids[2]), "test", "reading", &uses, s3_back).await;
        assert!(response.batch_item_failures.is_empty());
        let closed = breakers.get(Dependency::S3).await.expect("get").expect("stored");
        assert_eq!((closed.state, closed.opened), (BreakerState::Closed, 0));
    }

    #[tokio::test]
    async fn a_tool_that_will_not_start_retries_the_work_instead_of_failing_the_job() {
        #[derive(Debug, thiserror::Error)]
        #[error("ffmpeg could not be started")]
        struct NoTool;
        impl WorkError for NoTool {
            const PANIC_CODE: &'static str = "corrupt_test";
            fn code(&self) -> &'static str {
                "decoder_failed"
            }
            fn unavailable(&self) -> Option<Dependency> {
                Some(Dependency::Ffmpeg)
            }
        }
        let (jobs, blobs) = (MemoryJobStore::default(), MemoryBlobStore::default());
        let id = queued_job(&jobs).await;
        let run = Run::start(&jobs, &blobs, "test", id.clone(), "working").await.expect("start").expect("started");
        let outcome = run.blocking("working", (10, 90), Duration::ZERO, |_: &Progress| Err::<(), _>(NoTool)).await;
        let error = outcome.expect_err("retried");
        assert!(error.is_retryable());
        assert_eq!(error.dependency(), Some(Dependency::Ffmpeg));
        assert_eq!(jobs.get(&id).await.expect("get").expect("job").status, JobStatus::Processing, "not failed");
    }

    #[test]
    fn an_error_is_told_with_the_causes_it_does_not_already_show() {
        #[derive(Debug, thiserror::Error)]
        #[error("service error")]
        struct Sdk(#[source] std::io::Error);
        let error = HandlerError::Blob(BlobError::Unavailable(Box::new(Sdk(std::io::Error::other("AccessDenied: no")))));
        assert_eq!(with_causes(&error), "blob store unavailable: service error: AccessDenied: no");
    }

    #[tokio::test]
    async fn a_result_too_large_to_record_fails_the_job_instead_of_retrying_it() {
        let (jobs, blobs) = (MemoryJobStore::default(), MemoryBlobStore::default());
        let id = queued_job(&jobs).await;
        let run = Run::start(&jobs, &blobs, "test", id.clone(), "working").await.expect("start").expect("started");
        let keywords = (0..20_000).map(|i| crate::domain::results::Keyword { word: format!("word{i:06}"), count: i }).collect();
        let huge = JobResult::Text(crate::domain::results::TextResult { keywords, ..Default::default() });
        run.complete(huge, Vec::new()).await.expect("handled, not an error to retry");
        let job = jobs.get(&id).await.expect("get").expect("job");
        assert_eq!(job.status, JobStatus::Failed);
        let error = job.error.expect("error");
        assert_eq!(error.code, "result_too_large");
        assert!(error.message.contains("over the event limit"), "{}", error.message);
    }

    #[tokio::test]
    async fn a_panic_in_the_work_fails_the_job_with_the_panic_code() {
        let (jobs, blobs) = (MemoryJobStore::default(), MemoryBlobStore::default());
        let id = queued_job(&jobs).await;
        let run = Run::start(&jobs, &blobs, "test", id.clone(), "working").await.expect("start").expect("started");
        let work = |_: &Progress| -> Result<u32, TestError> { panic!("odd font") };
        let outcome = run.blocking("working", (0, 100), Duration::ZERO, work).await;
        assert!(outcome.expect("handled, not an error to retry").is_none(), "no value");
        let job = jobs.get(&id).await.expect("get").expect("job");
        assert_eq!(job.status, JobStatus::Failed);
        let error = job.error.expect("error");
        assert_eq!((error.code.as_str(), error.message.contains("odd font")), ("corrupt_test", true), "{}", error.message);
    }

    #[tokio::test]
    async fn a_work_error_fails_the_job_with_its_code_and_a_value_comes_back() {
        let (jobs, blobs) = (MemoryJobStore::default(), MemoryBlobStore::default());
        let id = queued_job(&jobs).await;
        let run = Run::start(&jobs, &blobs, "test", id.clone(), "working").await.expect("start").expect("started");
        let worked = run.blocking("working", (0, 100), Duration::ZERO, |_: &Progress| Ok::<_, TestError>(7)).await;
        assert_eq!(worked.expect("no store error"), Some(7));
        let failed = run.blocking("working", (0, 100), Duration::ZERO, |_: &Progress| Err::<u32, _>(TestError::Odd)).await;
        assert!(failed.expect("handled, not an error to retry").is_none());
        let job = jobs.get(&id).await.expect("get").expect("job");
        assert_eq!(job.status, JobStatus::Failed);
        let error = job.error.expect("error");
        assert_eq!((error.code.as_str(), error.message.as_str()), ("odd_file", "the file is odd"));
    }
}
