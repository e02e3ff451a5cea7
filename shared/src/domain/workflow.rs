//! Workflows: multi-step work declared as data, and the rules that advance a run.
//!
//! A definition (`shared/workflows/*.yaml`, compiled in) is a DAG of named
//! steps. Each step is a processor action (or the `combine` join) with its
//! input taken from the upload or from an earlier step's output. A run lives
//! on the job that asked for it (the *root* job): its steps' states are part
//! of that job, changed only through its state machine and log, so the join
//! starts exactly once (one conditional write decides it) and run and step
//! events reach every subscriber of the root job. Each started step is a job
//! of its own (its id derived from run, step and attempt), so its progress,
//! outputs and cancellation work as for any job.
//!
//! Nothing here knows of AWS: [`RunState::on_step_outcome`] and
//! [`RunState::on_cancel`] decide; the `workflow` function carries out.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use strum::{Display, EnumString, IntoStaticStr};

use crate::domain::job::{JobFailure, JobId, Modality, Output};
use crate::domain::results::JobResult;

/// The definitions shipped with Prism, one file each.
const SOURCES: &[(&str, &str)] = &[
    ("video_analysis.yaml", include_str!("../../workflows/video_analysis.yaml")),
    ("document_analysis.yaml", include_str!("../../workflows/document_analysis.yaml")),
    ("image_analysis.yaml", include_str!("../../workflows/image_analysis.yaml")),
];

/// What a `workflow` field may say instead of a name: the default workflow
/// of whatever modality the classifier finds.
pub const DEFAULT: &str = "default";

/// Longest a failed step waits before its next attempt (SQS's delay limit).
pub const MAX_RETRY_DELAY: Duration = Duration::seconds(900);

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Display, EnumString, IntoStaticStr)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum Action {
    ProcessText,
    ProcessImage,
    ProcessAudio,
    ProcessVideo,
    ProcessDocument,
    /// Part of process-image's work: the thumbnails (and the image's facts).
    ImageThumbnails,
    /// Part of process-image's work: the dominant colours and the perceptual
    /// hash, from a copy shrunk as it is decoded.
    ImagePalette,
    /// The join: gathers its parents' results into the run's result (done by
    /// the `workflow` function itself, no queue hop).
    Combine,
}

impl Action {
    /// The processor whose queue takes the step; `None` for `combine`.
    pub fn modality(self) -> Option<Modality> {
        match self {
            Self::ProcessText => Some(Modality::Text),
            Self::ProcessImage | Self::ImageThumbnails | Self::ImagePalette => Some(Modality::Image),
            Self::ProcessAudio => Some(Modality::Audio),
            Self::ProcessVideo => Some(Modality::Video),
            Self::ProcessDocument => Some(Modality::Document),
            Self::Combine => None,
        }
    }

    /// The outputs the action can write (some only for some inputs: a video
    /// without sound has no `audio`).
    pub fn outputs(self) -> &'static [&'static str] {
        match self {
            Self::ProcessText => &["text"],
            Self::ProcessImage | Self::ImageThumbnails => &["thumbnail_256", "thumbnail_1024"],
            Self::ImagePalette => &[],
            Self::ProcessAudio => &["waveform"],
            Self::ProcessVideo => &["poster", "contact_sheet", "audio"],
            Self::ProcessDocument => &["text", "pages", "preview"],
            Self::Combine => &[],
        }
    }
}

/// Where a step's input comes from: `upload`, or `step.output`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(try_from = "String", into = "String")]
pub enum InputRef {
    #[default]
    Upload,
    Output {
        step: String,
        name: String,
    },
}

impl FromStr for InputRef {
    type Err = DefinitionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('.') {
            None if s == "upload" => Ok(Self::Upload),
            Some((step, name)) if !step.is_empty() && !name.is_empty() => Ok(Self::Output { step: step.into(), name: name.into() }),
            _ => Err(DefinitionError::BadInput(s.into())),
        }
    }
}

impl TryFrom<String> for InputRef {
    type Error = DefinitionError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<InputRef> for String {
    fn from(input: InputRef) -> Self {
        input.to_string()
    }
}

impl fmt::Display for InputRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Upload => f.write_str("upload"),
            Self::Output { step, name } => write!(f, "{step}.{name}"),
        }
    }
}

/// What a step's failure (after its retries) does to the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// The run fails at once and its running steps are cancelled.
    #[default]
    Fail,
    /// The run goes on; steps that need this one's outputs are skipped and
    /// the join says what is missing.
    Continue,
}

/// One step of a definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepDef {
    pub name: String,
    pub action: Action,
    /// Ignored by `combine`, which reads its parents' results.
    #[serde(default)]
    pub input: InputRef,
    /// Steps that must finish first, beside the one the input comes from.
    #[serde(default)]
    pub after: Vec<String>,
    /// How long one attempt may take before the sweeper may end it.
    #[serde(default = "StepDef::default_timeout")]
    pub timeout_s: u32,
    /// Attempts after the first, for failures a new attempt can cure.
    #[serde(default)]
    pub retries: u32,
    /// First retry's delay; each next one doubles, with jitter.
    #[serde(default = "StepDef::default_retry_delay")]
    pub retry_delay_s: u32,
    #[serde(default)]
    pub on_failure: OnFailure,
}

impl StepDef {
    fn default_timeout() -> u32 {
        900
    }

    fn default_retry_delay() -> u32 {
        2
    }

    /// Every step that must finish before this one starts.
    pub fn parents(&self) -> impl Iterator<Item = &str> {
        let from_input = match &self.input {
            InputRef::Output { step, .. } if self.action != Action::Combine => Some(step.as_str()),
            _ => None,
        };
        from_input.into_iter().chain(self.after.iter().map(String::as_str))
    }
}

/// A workflow: steps in an order where every step comes after its parents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowDef {
    pub name: String,
    pub description: String,
    /// The content it is made for; it is that modality's default.
    pub modality: Modality,
    pub steps: Vec<StepDef>,
}

/// Why a definition is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefinitionError {
    #[error("input `{0}` is neither `upload` nor `step.output`")]
    BadInput(String),
    #[error("{file}: {message}")]
    Unreadable { file: String, message: String },
    #[error("workflow `{0}` has no steps")]
    Empty(String),
    #[error("workflow `{workflow}` names step `{step}` twice")]
    DuplicateStep { workflow: String, step: String },
    #[error("step `{step}` needs `{parent}`, which is not an earlier step (unknown, later, or itself: a cycle)")]
    UnknownParent { step: String, parent: String },
    #[error("step `{step}` reads `{input}`, which `{parent}` ({action}) never writes")]
    UnknownOutput { step: String, input: String, parent: String, action: Action },
    #[error("workflow `{workflow}` must end in exactly one step that nothing follows (its result); found {found:?}")]
    NotOneSink { workflow: String, found: Vec<String> },
    #[error("the first step of `{workflow}` ({action}) cannot read {modality} uploads")]
    WrongModality { workflow: String, action: Action, modality: Modality },
    #[error("two workflows are named `{0}`")]
    DuplicateWorkflow(String),
    #[error("no workflow is named `{0}`")]
    Unknown(String),
}

impl WorkflowDef {
    /// Checks what the issue asks of every definition: acyclic (each parent
    /// is an earlier step), every action known (the parser's job), every
    /// input produced by an earlier step, one result step.
    pub fn validate(&self) -> Result<(), DefinitionError> {
        if self.steps.is_empty() {
            return Err(DefinitionError::Empty(self.name.clone()));
        }
        for (i, step) in self.steps.iter().enumerate() {
            let earlier = &self.steps[..i];
            if earlier.iter().any(|s| s.name == step.name) {
                return Err(DefinitionError::DuplicateStep { workflow: self.name.clone(), step: step.name.clone() });
            }
            for parent in step.parents() {
                if !earlier.iter().any(|s| s.name == parent) {
                    return Err(DefinitionError::UnknownParent { step: step.name.clone(), parent: parent.into() });
                }
            }
            if let (InputRef::Output { step: parent, name }, false) = (&step.input, step.action == Action::Combine) {
                let producer = earlier.iter().find(|s| &s.name == parent).map(|s| s.action);
                if let Some(action) = producer.filter(|a| !a.outputs().contains(&name.as_str())) {
                    return Err(DefinitionError::UnknownOutput {
                        step: step.name.clone(),
                        input: step.input.to_string(),
                        parent: parent.clone(),
                        action,
                    });
                }
            }
            if step.input == InputRef::Upload && step.action != Action::Combine && step.action.modality() != Some(self.modality) {
                return Err(DefinitionError::WrongModality { workflow: self.name.clone(), action: step.action, modality: self.modality });
            }
        }
        let sinks: Vec<String> =
            self.steps.iter().filter(|s| !self.steps.iter().any(|c| c.parents().any(|p| p == s.name))).map(|s| s.name.clone()).collect();
        if sinks.len() != 1 {
            return Err(DefinitionError::NotOneSink { workflow: self.name.clone(), found: sinks });
        }
        Ok(())
    }

    pub fn step(&self, name: &str) -> Option<&StepDef> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// The step whose result is the run's result (validated to be the last).
    pub fn result_step(&self) -> &StepDef {
        self.steps.last().unwrap_or_else(|| unreachable!("validated definitions have steps"))
    }
}

/// Reads and validates definitions from `(file name, YAML)` pairs.
pub fn parse_catalog(sources: &[(&str, &str)]) -> Result<Vec<WorkflowDef>, DefinitionError> {
    let mut defs: Vec<WorkflowDef> = Vec::new();
    for (file, text) in sources {
        let def: WorkflowDef =
            serde_yaml_ng::from_str(text).map_err(|e| DefinitionError::Unreadable { file: (*file).into(), message: e.to_string() })?;
        def.validate()?;
        if defs.iter().any(|d| d.name == def.name) {
            return Err(DefinitionError::DuplicateWorkflow(def.name));
        }
        defs.push(def);
    }
    Ok(defs)
}

static CATALOG: LazyLock<Vec<WorkflowDef>> =
    LazyLock::new(|| parse_catalog(SOURCES).unwrap_or_else(|e| panic!("shipped workflow definitions are invalid: {e}")));

/// Every shipped workflow (checked by a unit test, so never a panic at run time).
pub fn catalog() -> &'static [WorkflowDef] {
    &CATALOG
}

pub fn find(name: &str) -> Result<&'static WorkflowDef, DefinitionError> {
    catalog().iter().find(|d| d.name == name).ok_or_else(|| DefinitionError::Unknown(name.into()))
}

/// The workflow a request's `workflow` names for content of `modality`:
/// [`DEFAULT`] picks the modality's own; a name must be made for it.
pub fn resolve(requested: &str, modality: Modality) -> Result<&'static WorkflowDef, JobFailure> {
    let def = if requested == DEFAULT {
        catalog()
            .iter()
            .find(|d| d.modality == modality)
            .ok_or_else(|| JobFailure::new("no_workflow", format!("no workflow is made for {modality} content")))?
    } else {
        find(requested).map_err(|e| JobFailure::new("no_workflow", e.to_string()))?
    };
    if def.modality != modality {
        let message = format!("workflow `{}` is made for {} content; this upload is {modality}", def.name, def.modality);
        return Err(JobFailure::new("workflow_mismatch", message));
    }
    Ok(def)
}

/// Where a step stands in its run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Display, IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum StepStatus {
    /// Its parents have not all finished.
    Waiting,
    /// Its job for `attempt` is started (or waits out a retry delay).
    Running,
    Completed,
    Failed,
    /// Not run: its input was never produced.
    Skipped,
    Cancelled,
}

impl StepStatus {
    pub fn is_finished(self) -> bool {
        !matches!(self, Self::Waiting | Self::Running)
    }
}

/// A step's state, as the root job stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepState {
    pub name: String,
    pub status: StepStatus,
    /// 0 until first started.
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<JobId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// A retry waits until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<Output>,
    /// Why it failed, was skipped or cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<JobFailure>,
}

/// A job that is one step of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepOf {
    pub run_id: JobId,
    pub step: String,
    pub attempt: u32,
}

/// The job of `step`'s `attempt` in run `run_id`: the same every time, so
/// starting a step twice finds the job the first start made.
pub fn step_job_id(run_id: &JobId, step: &str, attempt: u32) -> JobId {
    JobId::derived_for(&format!("prism-step\n{run_id}\n{step}\n{attempt}"))
}

/// The end of one attempt of a step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepEnd {
    pub step: String,
    pub attempt: u32,
    pub outcome: StepOutcome,
}

/// How a step's job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOutcome {
    Completed { outputs: Vec<Output> },
    Failed(JobFailure),
    Cancelled,
}

/// Failures a new attempt can cure: the message ran out of deliveries, the
/// job stalled, or the step ran past its `timeout_s`. A failure of the
/// content (unsupported, corrupt, too large) would fail again, so it is
/// never retried.
pub fn is_retryable_failure(failure: &JobFailure) -> bool {
    matches!(failure.code.as_str(), "retries_exhausted" | "stalled" | STEP_TIMEOUT)
}

/// The failure code of a step attempt that ran past its `timeout_s`.
pub const STEP_TIMEOUT: &str = "step_timeout";

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEnd {
    /// The result step completed: the root job completes with its result.
    Completed,
    Failed(JobFailure),
    Cancelled,
}

/// What the workflow function must do after recording a decision.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decision {
    /// New states of the steps that changed (the `job.run_advanced` event).
    pub changes: Vec<StepState>,
    /// Steps whose running jobs must be asked to stop.
    pub cancel: Vec<JobId>,
    pub end: Option<RunEnd>,
}

/// A run's steps, stored on its root job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    pub workflow: String,
    pub steps: Vec<StepState>,
}

impl RunState {
    /// A run of `def` before anything started.
    fn new(def: &WorkflowDef) -> Self {
        let steps = def
            .steps
            .iter()
            .map(|s| StepState {
                name: s.name.clone(),
                status: StepStatus::Waiting,
                attempt: 0,
                job_id: None,
                started_at: None,
                not_before: None,
                finished_at: None,
                outputs: Vec::new(),
                error: None,
            })
            .collect();
        Self { workflow: def.name.clone(), steps }
    }

    /// The state a new run of `def` starts in: the steps without parents running.
    pub fn start(def: &WorkflowDef, run_id: &JobId, now: DateTime<Utc>) -> Self {
        let mut run = Self::new(def);
        let decision = run.advance(def, run_id, false, now);
        run.merge(&decision.changes);
        run
    }

    pub fn step(&self, name: &str) -> Option<&StepState> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// Replaces the named steps' states (what applying `job.run_advanced` does).
    pub fn merge(&mut self, changes: &[StepState]) {
        for change in changes {
            if let Some(step) = self.steps.iter_mut().find(|s| s.name == change.name) {
                *step = change.clone();
            }
        }
    }

    /// Percent of steps finished.
    pub fn percent(&self) -> u8 {
        let done = self.steps.iter().filter(|s| s.status.is_finished()).count();
        (done * 100 / self.steps.len().max(1)) as u8
    }

    /// What the end of `step`'s `attempt` changes. A stale or repeated
    /// outcome (the step is not running that attempt) changes nothing.
    pub fn on_step_outcome(&self, def: &WorkflowDef, run_id: &JobId, cancelling: bool, end: &StepEnd, now: DateTime<Utc>) -> Decision {
        let StepEnd { step, attempt, outcome } = end;
        let (step, attempt) = (step.as_str(), *attempt);
        let (Some(state), Some(step_def)) = (self.step(step), def.step(step)) else { return Decision::default() };
        if state.status != StepStatus::Running || state.attempt != attempt {
            return Decision::default();
        }
        let mut next = state.clone();
        next.finished_at = Some(now);
        next.not_before = None;
        match outcome {
            StepOutcome::Completed { outputs } => {
                next.status = StepStatus::Completed;
                next.outputs = outputs.clone();
            }
            StepOutcome::Failed(failure) if !cancelling && attempt <= step_def.retries && is_retryable_failure(failure) => {
                next = running(step_def, run_id, attempt + 1, now);
                next.not_before = Some(now + retry_delay(step_def, attempt));
                next.error = Some(failure.clone());
            }
            StepOutcome::Failed(failure) => {
                next.status = StepStatus::Failed;
                next.error = Some(failure.clone());
            }
            StepOutcome::Cancelled => {
                next.status = StepStatus::Cancelled;
                next.error = Some(JobFailure::new("cancelled", "the step's job was cancelled"));
            }
        }
        let mut after = self.clone();
        after.merge(std::slice::from_ref(&next));
        let fatal = !cancelling && after.fatal_failure(def).is_some();
        let mut decision = after.advance(def, run_id, cancelling || fatal, now);
        after.merge(&decision.changes);
        decision.changes.insert(0, next);
        decision.end = after.settled(def, cancelling);
        if fatal {
            decision.cancel = after.running_jobs();
        }
        decision
    }

    /// When `step`'s running attempt must have ended: when it started (or,
    /// for a retry, when its wait ended) plus the step's `timeout_s`.
    pub fn deadline(&self, def: &WorkflowDef, step: &str) -> Option<DateTime<Utc>> {
        let (state, step_def) = (self.step(step)?, def.step(step)?);
        let started = state.started_at.max(state.not_before)?;
        (state.status == StepStatus::Running).then(|| started + Duration::seconds(i64::from(step_def.timeout_s)))
    }

    /// What `step`'s `attempt` still running at its deadline `due_at` (as
    /// [`Self::deadline`] gave it when the attempt started) changes: the
    /// attempt fails with [`STEP_TIMEOUT`] (retried as a stall is, while the
    /// step has retries left) and its job is asked to stop. Before the
    /// deadline, or for an attempt that already ended: nothing.
    pub fn on_step_deadline(
        &self,
        def: &WorkflowDef,
        run_id: &JobId,
        cancelling: bool,
        (step, attempt, due_at): (&str, u32, DateTime<Utc>),
        now: DateTime<Utc>,
    ) -> Decision {
        let Some(state) = self.step(step).filter(|s| s.status == StepStatus::Running && s.attempt == attempt) else {
            return Decision::default();
        };
        let Some(step_def) = def.step(step).filter(|_| now >= due_at) else { return Decision::default() };
        let message = format!("step {step} ran past its {} s (attempt {attempt})", step_def.timeout_s);
        let end = StepEnd { step: step.to_owned(), attempt, outcome: StepOutcome::Failed(JobFailure::new(STEP_TIMEOUT, message)) };
        let mut decision = self.on_step_outcome(def, run_id, cancelling, &end, now);
        decision.cancel.extend(state.job_id.clone());
        decision
    }

    /// What a cancel of the run changes: waiting steps never start, running
    /// ones are asked to stop; the run ends when none is left running.
    pub fn on_cancel(&self, def: &WorkflowDef, run_id: &JobId, now: DateTime<Utc>) -> Decision {
        let mut decision = self.advance(def, run_id, true, now);
        let mut after = self.clone();
        after.merge(&decision.changes);
        decision.cancel = after.running_jobs();
        decision.end = after.settled(def, true);
        decision
    }

    /// How the run ends as it stands, if it does: at once when a step whose
    /// policy is `fail` failed (unless the run is being cancelled anyway),
    /// otherwise once every step has finished.
    pub fn settled(&self, def: &WorkflowDef, cancelling: bool) -> Option<RunEnd> {
        if !cancelling && let Some(failure) = self.fatal_failure(def) {
            return Some(RunEnd::Failed(failure));
        }
        if !self.steps.iter().all(|s| s.status.is_finished()) {
            return None;
        }
        let result = &def.result_step().name;
        Some(match self.step(result).map(|s| s.status) {
            _ if cancelling => RunEnd::Cancelled,
            Some(StepStatus::Completed) => RunEnd::Completed,
            _ => RunEnd::Failed(JobFailure::new("no_result", format!("the result step `{result}` did not complete"))),
        })
    }

    /// The failure of the first step that ended badly under the `fail` policy.
    fn fatal_failure(&self, def: &WorkflowDef) -> Option<JobFailure> {
        self.steps.iter().find_map(|s| {
            let policy = def.step(&s.name).map_or(OnFailure::Fail, |d| d.on_failure);
            let bad = matches!(s.status, StepStatus::Failed | StepStatus::Cancelled);
            (bad && policy == OnFailure::Fail).then(|| {
                let why = s.error.as_ref().map_or_else(|| s.status.to_string(), |e| format!("{}: {}", e.code, e.message));
                JobFailure::new("step_failed", format!("step `{}` failed on attempt {}: {why}", s.name, s.attempt))
            })
        })
    }

    fn running_jobs(&self) -> Vec<JobId> {
        self.steps.iter().filter(|s| s.status == StepStatus::Running).filter_map(|s| s.job_id.clone()).collect()
    }

    /// Starts (or skips) every waiting step whose parents have all finished,
    /// in definition order so that a skip reaches the steps after it; when
    /// `stopping`, cancels every waiting step instead.
    fn advance(&self, def: &WorkflowDef, run_id: &JobId, stopping: bool, now: DateTime<Utc>) -> Decision {
        let mut run = self.clone();
        let mut decision = Decision::default();
        for step_def in &def.steps {
            let Some(state) = run.step(&step_def.name) else { continue };
            if state.status != StepStatus::Waiting {
                continue;
            }
            let next = if stopping {
                StepState { status: StepStatus::Cancelled, finished_at: Some(now), ..state.clone() }
            } else {
                let parents: Vec<&StepState> = step_def.parents().filter_map(|p| run.step(p)).collect();
                if !parents.iter().all(|p| p.status.is_finished()) {
                    continue;
                }
                match missing_input(step_def, &run) {
                    Some(reason) => StepState {
                        status: StepStatus::Skipped,
                        finished_at: Some(now),
                        error: Some(JobFailure::new("input_not_produced", reason)),
                        ..state.clone()
                    },
                    None => running(step_def, run_id, 1, now),
                }
            };
            run.merge(std::slice::from_ref(&next));
            decision.changes.push(next);
        }
        decision
    }

    /// Every completed step's outputs, named `step.output`.
    pub fn outputs(&self) -> Vec<Output> {
        self.steps
            .iter()
            .filter(|s| s.status == StepStatus::Completed)
            .flat_map(|s| s.outputs.iter().map(move |o| Output { name: format!("{}.{}", s.name, o.name), ..o.clone() }))
            .collect()
    }
}

/// Why `step` cannot start although its parents finished, if it cannot.
fn missing_input(step: &StepDef, run: &RunState) -> Option<String> {
    if step.action == Action::Combine {
        // The join runs with whatever its parents left and says what is missing.
        return None;
    }
    let InputRef::Output { step: parent, name } = &step.input else { return None };
    let state = run.step(parent)?;
    if state.status != StepStatus::Completed {
        return Some(format!("`{}` needs `{}`, but step `{parent}` {}", step.name, step.input, state.status));
    }
    (!state.outputs.iter().any(|o| &o.name == name))
        .then(|| format!("`{}` needs `{}`, which step `{parent}` did not write", step.name, step.input))
}

fn running(step: &StepDef, run_id: &JobId, attempt: u32, now: DateTime<Utc>) -> StepState {
    StepState {
        name: step.name.clone(),
        status: StepStatus::Running,
        attempt,
        job_id: Some(step_job_id(run_id, &step.name, attempt)),
        started_at: Some(now),
        not_before: None,
        finished_at: None,
        outputs: Vec::new(),
        error: None,
    }
}

/// `retry_delay_s × 2^(attempt-1)`, with up to 25% taken off at random so
/// steps that failed together do not retry together; at most 15 minutes.
fn retry_delay(step: &StepDef, attempt: u32) -> Duration {
    let base_ms = i64::from(step.retry_delay_s) * 1000 * (1i64 << attempt.saturating_sub(1).min(16));
    let jitter = fastrand::i64(0..=base_ms / 4);
    Duration::milliseconds(base_ms - jitter).min(MAX_RETRY_DELAY)
}

/// What a `combine` step produced: its parents' facts side by side.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct WorkflowResult {
    pub schema_version: u32,
    pub workflow: String,
    /// Each parent step: how it ended and what it wrote.
    pub steps: BTreeMap<String, StepSummary>,
    /// Parents that did not complete, with the reason (the `continue` policy).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    /// Video and its audio: the audio's silences and loudness beside the keyframes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<crate::domain::results::Timeline>,
    /// A document and the analysis of its text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<crate::domain::results::DocumentSummary>,
    /// An image's facts at a glance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<crate::domain::results::ImageSummary>,
}

impl WorkflowResult {
    pub const SCHEMA_VERSION: u32 = 1;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepSummary {
    pub status: StepStatus,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<JobId>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<String>,
}

/// The result of `combine` step `join` from its parents' states and the
/// results of those that completed.
pub fn combine(def: &WorkflowDef, run: &RunState, join: &StepDef, results: &BTreeMap<String, JobResult>) -> WorkflowResult {
    use crate::domain::results::{DocumentSummary, ImageSummary, Timeline, TimelineKeyframe};
    let mut combined = WorkflowResult { schema_version: WorkflowResult::SCHEMA_VERSION, workflow: def.name.clone(), ..Default::default() };
    for parent in join.parents() {
        let Some(state) = run.step(parent) else { continue };
        combined.steps.insert(
            parent.to_owned(),
            StepSummary {
                status: state.status,
                attempts: state.attempt,
                job_id: state.job_id.clone(),
                outputs: state.outputs.iter().map(|o| o.name.clone()).collect(),
            },
        );
        if state.status != StepStatus::Completed {
            let why = state.error.as_ref().map_or_else(|| state.status.to_string(), |e| format!("{}: {}", e.code, e.message));
            combined.missing.push(format!("{parent}: {why}"));
        }
    }
    let find = |pick: fn(&JobResult) -> bool| join.parents().filter_map(|p| results.get(p)).find(|r| pick(r));
    if let Some(JobResult::Video(video)) = find(|r| matches!(r, JobResult::Video(_))) {
        let audio = match find(|r| matches!(r, JobResult::Audio(_))) {
            Some(JobResult::Audio(a)) => Some(a),
            _ => None,
        };
        let silence = audio.map(|a| a.silence.spans.clone()).unwrap_or_default();
        let keyframes = video
            .contact_sheet
            .timestamps_s
            .iter()
            .map(|&at_s| TimelineKeyframe { at_s, silent: silence.iter().any(|s| s.start_s <= at_s && at_s < s.end_s) })
            .collect();
        combined.timeline = Some(Timeline {
            duration_s: video.duration_s,
            keyframes,
            silence,
            integrated_lufs: audio.and_then(|a| a.levels.integrated_lufs),
            peak_dbfs: audio.and_then(|a| a.levels.peak_dbfs),
        });
    }
    if let Some(JobResult::Document(doc)) = find(|r| matches!(r, JobResult::Document(_))) {
        let text = match find(|r| matches!(r, JobResult::Text(_))) {
            Some(JobResult::Text(t)) => Some(t),
            _ => None,
        };
        combined.document = Some(DocumentSummary {
            pages: doc.pages,
            words: doc.words,
            language: text.map(|t| t.language.clone()),
            keywords: text.map(|t| t.keywords.clone()).unwrap_or_default(),
            reading_time_s: text.map(|t| t.reading_time_s),
        });
    }
    // An image's facts may come from several steps (thumbnails apart from palette and hash).
    let images: Vec<_> = join
        .parents()
        .filter_map(|p| match results.get(p) {
            Some(JobResult::Image(image)) => Some(image),
            _ => None,
        })
        .collect();
    if let Some(first) = images.first() {
        combined.image = Some(ImageSummary {
            width: first.display_width,
            height: first.display_height,
            dominant_color: images.iter().find_map(|i| i.palette.first()).map(|c| c.hex.clone()),
            perceptual_hash: images.iter().find_map(|i| i.perceptual_hash.clone()),
            thumbnails: images.iter().map(|i| i.thumbnails.len() as u32).sum(),
        });
    }
    combined
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(name: &str) -> &'static WorkflowDef {
        find(name).expect("shipped")
    }

    fn run_id() -> JobId {
        JobId::new_random()
    }

    fn output(name: &str) -> Output {
        Output { name: name.into(), uri: "s3://b/outputs/x/f".parse().expect("uri"), content_type: "audio/flac".into(), size: 3 }
    }

    fn apply(run: &mut RunState, d: &Decision) {
        run.merge(&d.changes);
    }

    fn end(step: &str, attempt: u32, outcome: StepOutcome) -> StepEnd {
        StepEnd { step: step.into(), attempt, outcome }
    }

    /// Ends `step`'s current attempt with `outcome` and applies the decision.
    fn settle(run: &mut RunState, d: &WorkflowDef, id: &JobId, step: &str, outcome: StepOutcome) {
        let attempt = run.step(step).map_or(0, |s| s.attempt);
        let decision = run.on_step_outcome(d, id, false, &end(step, attempt, outcome), Utc::now());
        run.merge(&decision.changes);
    }

    #[test]
    fn a_step_past_its_timeout_fails_that_attempt_stops_its_job_and_retries_and_nothing_before() {
        let (d, id) = (def("video_analysis"), run_id());
        let run = RunState::start(d, &id, Utc::now());
        let probe = run.steps.iter().find(|s| s.status == StepStatus::Running).expect("a first step").clone();
        let deadline = run.deadline(d, &probe.name).expect("a running step has a deadline");
        let timeout = i64::from(d.step(&probe.name).expect("def").timeout_s);
        assert_eq!(deadline, probe.started_at.expect("started") + Duration::seconds(timeout));

        let early = run.on_step_deadline(d, &id, false, (&probe.name, probe.attempt, deadline), deadline - Duration::seconds(1));
        assert_eq!(early, Decision::default(), "not yet");
        let stale = run.on_step_deadline(d, &id, false, (&probe.name, probe.attempt + 1, deadline), deadline);
        assert_eq!(stale, Decision::default(), "another attempt's deadline");

        let late = run.on_step_deadline(d, &id, false, (&probe.name, probe.attempt, deadline), deadline);
        assert_eq!(late.cancel, vec![probe.job_id.clone().expect("its job")], "the overrunning job is asked to stop");
        let retried = late.changes.iter().find(|c| c.name == probe.name).expect("the step changed");
        assert_eq!((retried.status, retried.attempt), (StepStatus::Running, probe.attempt + 1), "a timeout is retried");
        assert!(retried.not_before.is_some(), "after a backoff");
        assert_eq!(late.end, None);
    }

    #[test]
    fn shipped_definitions_are_valid_and_each_modality_has_at_most_one_default() {
        assert!(catalog().len() >= 3);
        for m in Modality::ALL {
            assert!(catalog().iter().filter(|d| d.modality == *m).count() <= 1, "{m}");
        }
        for name in ["video_analysis", "document_analysis", "image_analysis"] {
            def(name).validate().expect(name);
        }
    }

    #[test]
    fn validation_refuses_cycles_unknown_actions_unproduced_inputs_and_two_results() {
        let yaml = |steps: &str| format!("name: w\ndescription: d\nmodality: video\nsteps:\n{steps}");
        let refused = |steps: &str| parse_catalog(&[("w.yaml", &yaml(steps))]).expect_err(steps);
        // A cycle: `a` waits for `b`, which comes later.
        assert!(matches!(
            refused("  - {name: a, action: process-video, after: [b]}\n  - {name: b, action: combine, after: [a]}\n"),
            DefinitionError::UnknownParent { .. }
        ));
        assert!(matches!(refused("  - {name: a, action: transcode}\n"), DefinitionError::Unreadable { .. }));
        assert!(matches!(
            refused("  - {name: a, action: process-video}\n  - {name: b, action: process-audio, input: a.subtitles}\n"),
            DefinitionError::UnknownOutput { .. }
        ));
        assert!(matches!(
            refused(
                "  - {name: a, action: process-video}\n  - {name: b, action: process-audio, input: a.audio}\n  - {name: c, action: process-image, input: a.poster}\n"
            ),
            DefinitionError::NotOneSink { .. }
        ));
        assert!(matches!(refused("  - {name: a, action: process-audio}\n"), DefinitionError::WrongModality { .. }));
        assert!(matches!(refused("  - {name: a, action: process-video, typo: 1}\n"), DefinitionError::Unreadable { .. }));
    }

    #[test]
    fn default_picks_the_modality_s_workflow_and_a_wrong_one_is_refused() {
        assert_eq!(resolve(DEFAULT, Modality::Video).expect("video").name, "video_analysis");
        assert_eq!(resolve("video_analysis", Modality::Image).expect_err("mismatch").code, "workflow_mismatch");
        assert_eq!(resolve("nope", Modality::Image).expect_err("unknown").code, "no_workflow");
    }

    #[test]
    fn a_run_fans_out_then_joins_once() {
        let d = def("video_analysis");
        let id = run_id();
        let now = Utc::now();
        let mut run = RunState::start(d, &id, now);
        assert_eq!(run.step("video").expect("video").status, StepStatus::Running);
        assert_eq!(run.step("audio").expect("audio").status, StepStatus::Waiting);
        let video_done = StepOutcome::Completed { outputs: vec![output("audio"), output("poster")] };
        let first = run.on_step_outcome(d, &id, false, &end("video", 1, video_done.clone()), now);
        assert_eq!(
            first.changes.iter().map(|s| (s.name.as_str(), s.status)).collect::<Vec<_>>(),
            [("video", StepStatus::Completed), ("audio", StepStatus::Running)]
        );
        apply(&mut run, &first);
        // The same completion again (a duplicate delivery) changes nothing.
        assert_eq!(run.on_step_outcome(d, &id, false, &end("video", 1, video_done), now), Decision::default());
        let audio = run.on_step_outcome(d, &id, false, &end("audio", 1, StepOutcome::Completed { outputs: vec![output("waveform")] }), now);
        let join = audio.changes.iter().find(|s| s.name == "timeline").expect("join started");
        assert_eq!((join.status, join.attempt), (StepStatus::Running, 1));
        apply(&mut run, &audio);
        let done = run.on_step_outcome(d, &id, false, &end("timeline", 1, StepOutcome::Completed { outputs: vec![] }), now);
        assert_eq!(done.end, Some(RunEnd::Completed));
        apply(&mut run, &done);
        assert_eq!(run.percent(), 100);
        assert_eq!(run.outputs().iter().map(|o| o.name.as_str()).collect::<Vec<_>>(), ["video.audio", "video.poster", "audio.waveform"]);
    }

    #[test]
    fn a_video_without_sound_skips_the_audio_step_and_still_joins() {
        let d = def("video_analysis");
        let id = run_id();
        let now = Utc::now();
        let run = RunState::start(d, &id, now);
        let decision =
            run.on_step_outcome(d, &id, false, &end("video", 1, StepOutcome::Completed { outputs: vec![output("poster")] }), now);
        let statuses: Vec<_> = decision.changes.iter().map(|s| (s.name.as_str(), s.status)).collect();
        assert_eq!(statuses, [("video", StepStatus::Completed), ("audio", StepStatus::Skipped), ("timeline", StepStatus::Running)]);
    }

    #[test]
    fn a_curable_failure_retries_with_a_growing_delay_and_a_content_failure_ends_the_run() {
        let d = def("video_analysis");
        let id = run_id();
        let now = Utc::now();
        let mut run = RunState::start(d, &id, now);
        let exhausted = || StepOutcome::Failed(JobFailure::new("retries_exhausted", "gave up"));
        let first = run.on_step_outcome(d, &id, false, &end("video", 1, exhausted()), now);
        let retry = &first.changes[0];
        assert_eq!((retry.status, retry.attempt), (StepStatus::Running, 2));
        assert_eq!(retry.job_id, Some(step_job_id(&id, "video", 2)));
        let delay1 = retry.not_before.expect("delay") - now;
        apply(&mut run, &first);
        let second = run.on_step_outcome(d, &id, false, &end("video", 2, exhausted()), now);
        let delay2 = second.changes[0].not_before.expect("delay") - now;
        assert!(delay2 > delay1, "{delay1} then {delay2}");
        assert!(delay1 >= Duration::milliseconds(1500) && delay2 >= Duration::seconds(3));

        let corrupt =
            run.on_step_outcome(d, &id, false, &end("video", 1, StepOutcome::Failed(JobFailure::new("corrupt_video", "bad"))), now);
        assert!(corrupt.changes.is_empty(), "attempt 1 is no longer running");
        let fresh = RunState::start(d, &id, now);
        let failed =
            fresh.on_step_outcome(d, &id, false, &end("video", 1, StepOutcome::Failed(JobFailure::new("corrupt_video", "bad"))), now);
        let Some(RunEnd::Failed(f)) = &failed.end else { panic!("run should fail: {failed:?}") };
        assert_eq!(f.code, "step_failed");
        assert!(f.message.contains("`video`") && f.message.contains("attempt 1") && f.message.contains("corrupt_video"), "{}", f.message);
    }

    #[test]
    fn a_continue_step_that_fails_lets_the_join_run_and_a_cancel_stops_everything() {
        let d = def("video_analysis");
        let id = run_id();
        let now = Utc::now();
        let mut run = RunState::start(d, &id, now);
        settle(&mut run, d, &id, "video", StepOutcome::Completed { outputs: vec![output("audio")] });
        let failed = run.on_step_outcome(d, &id, false, &end("audio", 1, StepOutcome::Failed(JobFailure::new("corrupt_audio", "x"))), now);
        assert_eq!(failed.end, None);
        assert_eq!(failed.changes.last().map(|s| (s.name.as_str(), s.status)), Some(("timeline", StepStatus::Running)));

        let cancel = run.on_cancel(d, &id, now);
        assert_eq!(cancel.cancel, vec![step_job_id(&id, "audio", 1)]);
        assert_eq!(cancel.changes.iter().map(|s| (s.name.as_str(), s.status)).collect::<Vec<_>>(), [("timeline", StepStatus::Cancelled)]);
        assert_eq!(cancel.end, None, "audio still running");
        apply(&mut run, &cancel);
        let stopped = run.on_step_outcome(d, &id, true, &end("audio", 1, StepOutcome::Cancelled), now);
        assert_eq!(stopped.end, Some(RunEnd::Cancelled));
    }

    #[test]
    fn the_timeline_puts_the_audio_s_silences_beside_the_keyframes_and_names_what_is_missing() {
        use crate::domain::results::{AudioLevels, AudioResult, ContactSheet, SilenceReport, TimeSpan, VideoResult};
        let d = def("video_analysis");
        let id = run_id();
        let now = Utc::now();
        let mut run = RunState::start(d, &id, now);
        settle(&mut run, d, &id, "video", StepOutcome::Completed { outputs: vec![output("audio")] });
        let video = VideoResult {
            duration_s: 10.0,
            contact_sheet: ContactSheet { timestamps_s: vec![1.0, 5.0, 9.0], ..Default::default() },
            ..Default::default()
        };
        let silence = vec![TimeSpan { start_s: 4.0, end_s: 6.0 }];
        let audio = AudioResult {
            silence: SilenceReport { spans: silence.clone(), ..Default::default() },
            levels: AudioLevels { integrated_lufs: Some(-20.5), peak_dbfs: Some(-1.0), rms_dbfs: None },
            ..Default::default()
        };
        let results = BTreeMap::from([
            ("video".to_owned(), JobResult::Video(Box::new(video.clone()))),
            ("audio".to_owned(), JobResult::Audio(Box::new(audio))),
        ]);
        settle(&mut run, d, &id, "audio", StepOutcome::Completed { outputs: vec![] });
        let combined = combine(d, &run, d.result_step(), &results);
        let timeline = combined.timeline.expect("timeline");
        assert_eq!(timeline.silence, silence);
        assert_eq!(timeline.integrated_lufs, Some(-20.5));
        assert_eq!(timeline.keyframes.iter().map(|k| k.silent).collect::<Vec<_>>(), [false, true, false]);
        assert!(combined.missing.is_empty());

        // Without the audio step's result the timeline still has the pictures.
        let mut failed = RunState::start(d, &id, now);
        settle(&mut failed, d, &id, "video", StepOutcome::Completed { outputs: vec![output("audio")] });
        settle(&mut failed, d, &id, "audio", StepOutcome::Failed(JobFailure::new("corrupt_audio", "x")));
        let results = BTreeMap::from([("video".to_owned(), JobResult::Video(Box::new(video)))]);
        let combined = combine(d, &failed, d.result_step(), &results);
        assert_eq!(combined.missing, ["audio: corrupt_audio: x"]);
        assert!(combined.timeline.expect("timeline").silence.is_empty());
    }

    #[test]
    fn image_analysis_runs_its_two_parts_side_by_side_and_its_summary_takes_each_from_its_step() {
        use crate::domain::results::{ImageResult, PaletteColor, Thumbnail};
        let (d, id, now) = (def("image_analysis"), run_id(), Utc::now());
        let mut run = RunState::start(d, &id, now);
        let running: Vec<&str> = run.steps.iter().filter(|s| s.status == StepStatus::Running).map(|s| s.name.as_str()).collect();
        assert_eq!(running, ["thumbnails", "palette"], "both read the upload: started together");
        let thumb = |name: &str| Thumbnail { name: name.into(), width: 1, height: 1, content_type: "image/jpeg".into() };
        let facts = ImageResult { display_width: 1200, display_height: 800, ..Default::default() };
        let thumbnails = ImageResult { thumbnails: vec![thumb("thumbnail_1024"), thumb("thumbnail_256")], ..facts.clone() };
        let palette = ImageResult {
            palette: vec![PaletteColor { hex: "#c81e1e".into(), share: 0.4 }],
            perceptual_hash: Some("00ff00ff00ff00ff".into()),
            ..facts
        };
        settle(&mut run, d, &id, "thumbnails", StepOutcome::Completed { outputs: vec![output("thumbnail_256"), output("thumbnail_1024")] });
        settle(&mut run, d, &id, "palette", StepOutcome::Completed { outputs: vec![] });
        let results = BTreeMap::from([
            ("thumbnails".to_owned(), JobResult::Image(Box::new(thumbnails))),
            ("palette".to_owned(), JobResult::Image(Box::new(palette))),
        ]);
        let summary = combine(d, &run, d.result_step(), &results).image.expect("image summary");
        assert_eq!((summary.width, summary.height, summary.thumbnails), (1200, 800, 2));
        assert_eq!((summary.dominant_color.as_deref(), summary.perceptual_hash.as_deref()), (Some("#c81e1e"), Some("00ff00ff00ff00ff")));
    }
}
