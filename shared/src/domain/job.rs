//! The job: Prism's unit of work, and the one state machine every function
//! goes through to change it.
//!
//! Nothing here knows about AWS. Adapters persist a [`Job`] and the
//! [`JobEvent`] that changed it together, conditionally on the sequence number
//! the change was computed from (see [`crate::ports::JobStore::commit`]).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use strum::{Display, EnumString, IntoStaticStr, VariantArray};

use crate::domain::joblog::{LogLine, MAX_LOG_LINES};
use crate::domain::phases::{Counts, PhaseStatus, Phases};
use crate::domain::results::JobResult;
use crate::domain::uri::S3Uri;
use crate::domain::workflow::{RunState, StepOf, StepState, StepStatus};

/// How long a job and its events are kept (DynamoDB TTL).
pub const RETENTION: Duration = Duration::days(7);

/// A job id: a UUID, v7 (time-ordered) for jobs created through the API and
/// v5 (derived from the object) for files dropped straight into the bucket.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(String);

impl JobId {
    pub fn new_random() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    /// The same object (bucket, key and ETag) always gives the same id, so a
    /// redelivered S3 notification finds the job it already created.
    pub fn for_object(uri: &S3Uri, etag: &str) -> Self {
        Self::derived(&uuid::Uuid::NAMESPACE_URL, &format!("{uri}#{etag}"))
    }

    /// [`Self::for_object`] for the `generation`-th upload of the same object
    /// (0 is `for_object` itself): the same key and ETag dropped again after
    /// the job of the earlier drop expired.
    pub fn for_object_generation(uri: &S3Uri, etag: &str, generation: u32) -> Self {
        match generation {
            0 => Self::for_object(uri, etag),
            n => Self::derived(&uuid::Uuid::NAMESPACE_URL, &format!("{uri}#{etag}#{n}")),
        }
    }

    /// The same request (owner and idempotency key) always gives the same id,
    /// so a retried submit finds the job it already created.
    pub fn for_request(owner: &str, idempotency_key: &str) -> Self {
        Self::derived(&uuid::Uuid::NAMESPACE_OID, &format!("prism-idempotency\n{owner}\n{idempotency_key}"))
    }

    /// An id derived from `name` in Prism's own namespace (a run's step jobs).
    pub(crate) fn derived_for(name: &str) -> Self {
        Self::derived(&uuid::Uuid::NAMESPACE_OID, name)
    }

    fn derived(namespace: &uuid::Uuid, name: &str) -> Self {
        Self(uuid::Uuid::new_v5(namespace, name.as_bytes()).to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for JobId {
    type Err = uuid::Error;

    /// Only UUIDs are job ids: anything else from a URL or an object key is
    /// refused before it reaches a table key.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(uuid::Uuid::parse_str(s)?.hyphenated().to_string()))
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a job is in its life. The last three are terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Display, EnumString, IntoStaticStr, VariantArray)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Processing,
    Completed,
    Failed,
    Cancelled,
}

impl JobStatus {
    /// Every value, in declaration order.
    pub const ALL: &'static [Self] = <Self as VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

/// What kind of content a job holds, decided from its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Display, EnumString, IntoStaticStr, VariantArray)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Modality {
    Text,
    Image,
    Audio,
    Video,
    Document,
}

impl Modality {
    /// Every value, in declaration order.
    pub const ALL: &'static [Self] = <Self as VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// How soon a job should run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, Display, EnumString, IntoStaticStr, VariantArray)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Priority {
    Urgent,
    High,
    #[default]
    Normal,
    Low,
    Batch,
}

impl Priority {
    /// Every value, in declaration order.
    pub const ALL: &'static [Self] = <Self as VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A priority lane: each modality has one queue per lane, each with its
/// own share of the processor's concurrency, so urgent work never waits
/// behind a backlog and the bulk lane always keeps its share (no starvation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Display, EnumString, IntoStaticStr, VariantArray)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Lane {
    Fast,
    Normal,
    Bulk,
}

impl Lane {
    /// Every value, in declaration order.
    pub const ALL: &'static [Self] = <Self as VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl Priority {
    pub fn lane(self) -> Lane {
        match self {
            Self::Urgent | Self::High => Lane::Fast,
            Self::Normal => Lane::Normal,
            Self::Low | Self::Batch => Lane::Bulk,
        }
    }
}

/// The uploaded object a job works on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputObject {
    pub uri: S3Uri,
    pub size: u64,
    pub etag: String,
}

/// A file a processor produced for a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    /// Stable within a result schema, e.g. `text`, `thumbnail_256`.
    pub name: String,
    pub uri: S3Uri,
    pub content_type: String,
    pub size: u64,
}

/// Why a job failed: a stable machine-readable code and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFailure {
    pub code: String,
    pub message: String,
}

impl JobFailure {
    /// The code of a job failed because its message exhausted its retries:
    /// the one failure an operator may undo by redriving the dead letter.
    pub const RETRIES_EXHAUSTED: &'static str = "retries_exhausted";

    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { code: code.into(), message: message.into() }
    }
}

/// What the classifier decided about a job's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Classification {
    pub modality: Modality,
    pub mime: String,
    pub confidence: f32,
    pub estimated_seconds: f64,
}

/// A job as it is stored and returned by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub owner: String,
    pub status: JobStatus,
    pub priority: Priority,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modality: Option<Modality>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime: Option<String>,
    /// 0..=100.
    pub progress: u8,
    pub phase: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_s: Option<f64>,
    /// The classifier's estimate of the processing time, kept so the job can
    /// say how far off it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_s: Option<f64>,
    /// Once completed: the processing time it took minus [`Self::estimated_s`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate_error_s: Option<f64>,
    /// The stretches of the processor's work so far, each with its counts.
    #[serde(default, skip_serializing_if = "Phases::is_empty")]
    pub phases: Phases,
    /// Lines in the job's log (`job.log` events), at most [`MAX_LOG_LINES`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub log_lines: u32,
    /// Where the upload is expected (API jobs) or was found (bucket drops).
    pub upload: S3Uri,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<InputObject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<JobResult>,
    /// Files the processor wrote, under `outputs/{job_id}/`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<Output>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<JobFailure>,
    #[serde(default)]
    pub cancel_requested: bool,
    /// The size the client said it would upload; classify checks it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared_size: Option<u64>,
    /// The client's own labels, returned as given.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub metadata: std::collections::BTreeMap<String, String>,
    /// The workflow the submission asked for (a name, or `default`): the
    /// classifier hands such a job to the `workflow` function, not a processor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// The run this job holds once its workflow started (it is the run's root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunState>,
    /// For a step's job: the run and step it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_of: Option<StepOf>,
    pub trace_id: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The sequence number of the last event applied; the first is 1.
    pub seq: u64,
    /// Unix seconds after which DynamoDB TTL may delete the job.
    pub expires_at: i64,
    /// Whether a live subscription has followed the job: its events then go
    /// to the fan-out, and a job nobody watches costs the fan-out nothing.
    /// The store's bookkeeping, never part of the job's JSON.
    #[serde(skip)]
    pub watched: bool,
}

/// Everything that can happen to a job. Each one that changes the job is
/// appended to its event log with the next sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload")]
pub enum JobEvent {
    #[serde(rename = "job.created")]
    Created { owner: String, priority: Priority, upload: S3Uri },
    #[serde(rename = "job.uploaded")]
    Uploaded { input: InputObject },
    #[serde(rename = "job.classified")]
    Classified(Classification),
    #[serde(rename = "job.started")]
    Started { phase: String },
    #[serde(rename = "job.progress")]
    Progress {
        phase: String,
        progress: u8,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        eta_s: Option<f64>,
        /// The phase's own counts (pages, keyframes), when the processor has them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        counts: Option<Counts>,
    },
    /// Lines a processor wrote about its work.
    #[serde(rename = "job.log")]
    Logged { lines: Vec<LogLine> },
    /// The root job's workflow started: its steps and the first ones running.
    #[serde(rename = "job.run_started")]
    RunStarted { run: RunState },
    /// Steps of the root job's run changed (finished, started, retried, skipped).
    #[serde(rename = "job.run_advanced")]
    RunAdvanced { changes: Vec<StepState> },
    #[serde(rename = "job.completed")]
    Completed {
        result: JobResult,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        outputs: Vec<Output>,
    },
    #[serde(rename = "job.failed")]
    Failed(JobFailure),
    #[serde(rename = "job.cancel_requested")]
    CancelRequested,
    #[serde(rename = "job.cancelled")]
    Cancelled,
    /// An operator sent the job's dead letter back to `queue`: a job failed
    /// as `retries_exhausted` is queued again.
    #[serde(rename = "job.redriven")]
    Redriven { queue: String },
}

impl JobEvent {
    /// Whether this event ends its job (completed, failed or cancelled).
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Completed { .. } | Self::Failed(_) | Self::Cancelled)
    }

    pub fn event_type(&self) -> &'static str {
        match self {
            Self::Created { .. } => "job.created",
            Self::Uploaded { .. } => "job.uploaded",
            Self::Classified(_) => "job.classified",
            Self::Started { .. } => "job.started",
            Self::Progress { .. } => "job.progress",
            Self::Logged { .. } => "job.log",
            Self::RunStarted { .. } => "job.run_started",
            Self::RunAdvanced { .. } => "job.run_advanced",
            Self::Completed { .. } => "job.completed",
            Self::Failed(_) => "job.failed",
            Self::CancelRequested => "job.cancel_requested",
            Self::Cancelled => "job.cancelled",
            Self::Redriven { .. } => "job.redriven",
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A change the state machine refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("job is {status} and never changes again")]
    Terminal { status: JobStatus },
    #[error("{event} is not allowed while the job is {status}")]
    NotAllowed { status: JobStatus, event: &'static str },
    #[error("the job already has input {existing}; refusing a different one")]
    InputMismatch { existing: String },
}

/// What applying an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The job changed; the event must be recorded.
    Changed,
    /// The job already reflects the event (a redelivered message): nothing to record.
    AlreadyApplied,
}

impl Job {
    /// A new job waiting for its upload.
    pub fn new(id: JobId, owner: String, priority: Priority, upload: S3Uri, trace_id: String, now: DateTime<Utc>) -> Self {
        Self {
            id,
            owner,
            status: JobStatus::Queued,
            priority,
            modality: None,
            mime: None,
            progress: 0,
            phase: "awaiting_upload".into(),
            eta_s: None,
            estimated_s: None,
            estimate_error_s: None,
            phases: Phases::default(),
            log_lines: 0,
            upload,
            input: None,
            result: None,
            outputs: Vec::new(),
            error: None,
            cancel_requested: false,
            declared_size: None,
            metadata: std::collections::BTreeMap::new(),
            workflow: None,
            run: None,
            step_of: None,
            trace_id,
            created_at: now,
            updated_at: now,
            seq: 1,
            expires_at: (now + RETENTION).timestamp(),
            watched: false,
        }
    }

    /// The event that records this job's creation.
    pub fn created_event(&self) -> JobEvent {
        JobEvent::Created { owner: self.owner.clone(), priority: self.priority, upload: self.upload.clone() }
    }

    /// Whether TTL has passed (DynamoDB deletes expired items only eventually).
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at <= now.timestamp()
    }

    /// The state machine. On [`Applied::Changed`] the caller records the event
    /// with sequence number `self.seq` (already advanced here).
    pub fn apply(&mut self, event: &JobEvent, now: DateTime<Utc>) -> Result<Applied, TransitionError> {
        use JobStatus::*;
        let status = self.status;
        if let JobEvent::Redriven { .. } = event {
            return self.redrive(now);
        }
        if status.is_terminal() {
            // Repeating the event that ended the job is a redelivery, not an error.
            let same_end = matches!(
                (status, event),
                (Completed, JobEvent::Completed { .. })
                    | (Failed, JobEvent::Failed(_))
                    | (Cancelled, JobEvent::Cancelled | JobEvent::CancelRequested)
            );
            return if same_end { Ok(Applied::AlreadyApplied) } else { Err(TransitionError::Terminal { status }) };
        }
        let refuse = || TransitionError::NotAllowed { status, event: event.event_type() };
        match event {
            JobEvent::Created { .. } => return Err(refuse()),
            JobEvent::Uploaded { input } => {
                if status != Queued {
                    return Err(refuse());
                }
                match &self.input {
                    Some(existing) if existing == input => return Ok(Applied::AlreadyApplied),
                    Some(existing) => {
                        return Err(TransitionError::InputMismatch { existing: format!("{}#{}", existing.uri, existing.etag) });
                    }
                    None => {
                        self.input = Some(input.clone());
                        self.phase = "uploaded".into();
                    }
                }
            }
            JobEvent::Classified(c) => {
                if status != Queued {
                    return Err(refuse());
                }
                if self.modality.is_some() {
                    return Ok(Applied::AlreadyApplied);
                }
                self.modality = Some(c.modality);
                self.mime = Some(c.mime.clone());
                self.eta_s = Some(c.estimated_seconds);
                self.estimated_s = Some(c.estimated_seconds);
                self.phase = "classified".into();
            }
            JobEvent::Started { phase } => match status {
                Queued => {
                    self.status = Processing;
                    self.phase = phase.clone();
                    self.phases.enter(phase, None, now);
                }
                // A retry of a processor whose earlier attempt died mid-way.
                Processing => return Ok(Applied::AlreadyApplied),
                _ => return Err(refuse()),
            },
            JobEvent::Progress { phase, progress, eta_s, counts } => {
                if status != Processing {
                    return Err(refuse());
                }
                self.phase = phase.clone();
                // Progress never goes backwards, even when a retry starts over.
                self.progress = self.progress.max((*progress).min(100));
                self.phases.enter(phase, *counts, now);
                // The processor's own estimate, else the running phase's rate.
                self.eta_s = eta_s.or_else(|| self.phases.current().and_then(|p| p.remaining_s(now)));
            }
            JobEvent::Logged { lines } => {
                if lines.is_empty() {
                    return Ok(Applied::AlreadyApplied);
                }
                if self.log_lines as usize + lines.len() > MAX_LOG_LINES as usize {
                    return Err(refuse());
                }
                self.log_lines += lines.len() as u32;
            }
            JobEvent::RunStarted { run } => match (status, &self.run) {
                (Queued, None) if self.workflow.is_some() => {
                    self.status = Processing;
                    self.phase = format!("workflow {}", run.workflow);
                    self.run = Some(run.clone());
                }
                (Processing, Some(_)) => return Ok(Applied::AlreadyApplied),
                _ => return Err(refuse()),
            },
            JobEvent::RunAdvanced { changes } => {
                let Some(run) = self.run.as_mut().filter(|_| status == Processing) else { return Err(refuse()) };
                if changes.iter().all(|c| run.step(&c.name) == Some(c)) {
                    return Ok(Applied::AlreadyApplied);
                }
                run.merge(changes);
                let running: Vec<&str> = run.steps.iter().filter(|s| s.status == StepStatus::Running).map(|s| s.name.as_str()).collect();
                self.phase = if running.is_empty() { "finishing".into() } else { format!("running {}", running.join(", ")) };
                // The run's progress is its finished steps; 100 only once the job completes.
                self.progress = self.progress.max(run.percent().min(99));
            }
            JobEvent::Completed { result, outputs } => {
                if status != Processing {
                    return Err(refuse());
                }
                self.status = Completed;
                self.progress = 100;
                self.phase = "completed".into();
                self.eta_s = Some(0.0);
                self.phases.end(PhaseStatus::Completed, now);
                if let (Some(estimate), Some(first)) = (self.estimated_s, self.phases.all().first()) {
                    self.estimate_error_s = Some((now - first.started_at).num_milliseconds() as f64 / 1e3 - estimate);
                }
                self.result = Some(result.clone());
                self.outputs = outputs.clone();
            }
            JobEvent::Failed(failure) => {
                self.status = Failed;
                self.phase = "failed".into();
                self.eta_s = None;
                self.phases.end(PhaseStatus::Failed, now);
                self.error = Some(failure.clone());
            }
            JobEvent::CancelRequested => {
                if self.cancel_requested {
                    return Ok(Applied::AlreadyApplied);
                }
                self.cancel_requested = true;
                // A queued job has nothing running that needs to stop.
                if status == Queued {
                    self.status = Cancelled;
                    self.phase = "cancelled".into();
                }
            }
            JobEvent::Cancelled => {
                self.status = Cancelled;
                self.phase = "cancelled".into();
                self.phases.end(PhaseStatus::Cancelled, now);
            }
            JobEvent::Redriven { .. } => unreachable!("handled before the terminal check"),
        }
        self.seq += 1;
        self.updated_at = now;
        Ok(Applied::Changed)
    }

    /// The one way back from an end: a job its dead letter failed is queued
    /// again. Any other end stands (a job that completed on a late attempt
    /// is not run twice); a job already queued again is a repeated redrive.
    fn redrive(&mut self, now: DateTime<Utc>) -> Result<Applied, TransitionError> {
        use JobStatus::*;
        match (self.status, &self.error) {
            (Failed, Some(e)) if e.code == JobFailure::RETRIES_EXHAUSTED => {
                self.status = Queued;
                self.error = None;
                self.phase = "redriven".into();
                self.eta_s = self.estimated_s;
                self.seq += 1;
                self.updated_at = now;
                Ok(Applied::Changed)
            }
            (Queued | Processing, _) => Ok(Applied::AlreadyApplied),
            (status, _) if status.is_terminal() => Err(TransitionError::Terminal { status }),
            (status, _) => Err(TransitionError::NotAllowed { status, event: "job.redriven" }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::results::TextResult;

    fn job() -> Job {
        let upload: S3Uri = "s3://b/uploads/o/x.txt".parse().expect("uri");
        Job::new(JobId::new_random(), "o".into(), Priority::Normal, upload, "t".into(), Utc::now())
    }

    fn text_result() -> JobResult {
        JobResult::Text(TextResult::default())
    }

    #[test]
    fn happy_path_advances_seq_once_per_change() {
        let mut j = job();
        let now = Utc::now();
        assert_eq!(j.apply(&JobEvent::Started { phase: "reading".into() }, now), Ok(Applied::Changed));
        assert_eq!(j.apply(&JobEvent::Started { phase: "reading".into() }, now), Ok(Applied::AlreadyApplied));
        j.apply(&JobEvent::Completed { result: text_result(), outputs: Vec::new() }, now).expect("complete");
        assert_eq!(j.status, JobStatus::Completed);
        assert_eq!(j.progress, 100);
        assert_eq!(j.seq, 3);
    }

    #[test]
    fn only_a_job_its_dead_letter_failed_is_queued_again_by_a_redrive() {
        let redrive = JobEvent::Redriven { queue: "prism-dev-text-normal".into() };
        let now = Utc::now();
        let mut dead = job();
        dead.apply(&JobEvent::Started { phase: "p".into() }, now).expect("start");
        dead.apply(&JobEvent::Failed(JobFailure::new(JobFailure::RETRIES_EXHAUSTED, "gave up")), now).expect("fail");
        assert_eq!(dead.apply(&redrive, now), Ok(Applied::Changed));
        assert_eq!((dead.status, dead.error.as_ref(), dead.phase.as_str()), (JobStatus::Queued, None, "redriven"));
        assert_eq!(dead.apply(&redrive, now), Ok(Applied::AlreadyApplied), "a repeated redrive");
        dead.apply(&JobEvent::Started { phase: "p".into() }, now).expect("runs again");

        for end in [
            JobEvent::Completed { result: text_result(), outputs: Vec::new() },
            JobEvent::Failed(JobFailure::new("unreadable", "bad input")),
            JobEvent::Cancelled,
        ] {
            let mut j = job();
            j.apply(&JobEvent::Started { phase: "p".into() }, now).expect("start");
            j.apply(&end, now).expect("end");
            let before = j.clone();
            assert!(matches!(j.apply(&redrive, now), Err(TransitionError::Terminal { .. })), "{end:?}");
            assert_eq!(j, before);
        }
    }

    #[test]
    fn terminal_jobs_never_change() {
        for end in [
            JobEvent::Completed { result: text_result(), outputs: Vec::new() },
            JobEvent::Failed(JobFailure::new("x", "y")),
            JobEvent::Cancelled,
        ] {
            let mut j = job();
            j.apply(&JobEvent::Started { phase: "p".into() }, Utc::now()).expect("start");
            j.apply(&end, Utc::now()).expect("end");
            let before = j.clone();
            for ev in [
                JobEvent::Started { phase: "p".into() },
                JobEvent::Progress { phase: "p".into(), progress: 5, eta_s: None, counts: None },
                JobEvent::Failed(JobFailure::new("late", "late")),
                JobEvent::Completed { result: text_result(), outputs: Vec::new() },
            ] {
                if let Ok(applied) = j.apply(&ev, Utc::now()) {
                    assert_eq!(applied, Applied::AlreadyApplied);
                }
                assert_eq!(j, before, "{ev:?} changed a terminal job");
            }
        }
    }

    #[test]
    fn cancelling_a_queued_job_ends_it_at_once_but_a_running_one_only_asks() {
        let mut q = job();
        q.apply(&JobEvent::CancelRequested, Utc::now()).expect("cancel");
        assert_eq!(q.status, JobStatus::Cancelled);

        let mut r = job();
        r.apply(&JobEvent::Started { phase: "p".into() }, Utc::now()).expect("start");
        r.apply(&JobEvent::CancelRequested, Utc::now()).expect("cancel");
        assert_eq!(r.status, JobStatus::Processing);
        assert!(r.cancel_requested);
    }

    #[test]
    fn a_second_different_upload_is_refused() {
        let mut j = job();
        let input = |etag: &str| InputObject { uri: j.upload.clone(), size: 3, etag: etag.into() };
        let (a, b) = (input("a"), input("b"));
        j.apply(&JobEvent::Uploaded { input: a.clone() }, Utc::now()).expect("upload");
        assert_eq!(j.apply(&JobEvent::Uploaded { input: a }, Utc::now()), Ok(Applied::AlreadyApplied));
        assert!(matches!(j.apply(&JobEvent::Uploaded { input: b }, Utc::now()), Err(TransitionError::InputMismatch { .. })));
    }

    #[test]
    fn object_ids_are_stable_and_ids_parse_only_as_uuids() {
        let uri: S3Uri = "s3://b/uploads/k".parse().expect("uri");
        assert_eq!(JobId::for_object(&uri, "e"), JobId::for_object(&uri, "e"));
        assert_ne!(JobId::for_object(&uri, "e"), JobId::for_object(&uri, "f"));
        assert!("../../etc".parse::<JobId>().is_err());
    }
}
