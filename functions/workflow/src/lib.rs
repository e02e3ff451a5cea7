//! workflow: advances workflow runs.
//!
//! Its queue carries `run.start` commands from classify and, through a
//! filtered subscription to the job-events topic, the terminal events of
//! every step's job and the root job's `job.cancel_requested`. Each message
//! is decided on the root job as read ([`prism_shared::domain::workflow`]
//! decides) and recorded conditionally on it, so two steps ending at once
//! decide in turn and the join starts exactly once; what the decision asks
//! for (start step jobs, cancel them, end the run) follows the write, and a
//! redelivery that finds the write already made does it again.

use std::collections::BTreeMap;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::Utc;
use prism_shared::app::lifecycle::{self, LifecycleError};
use prism_shared::app::processing::Run;
use prism_shared::app::sqs_batch::{self, Backoff, HandlerError};
use prism_shared::domain::commands::Command;
use prism_shared::domain::envelope::{self, RunRef};
use prism_shared::domain::job::{InputObject, Job, JobFailure};
use prism_shared::domain::lanes;
use prism_shared::domain::results::JobResult;
use prism_shared::domain::workflow::{
    self, Action, Decision, InputRef, RunEnd, RunState, StepDef, StepEnd, StepOf, StepOutcome, StepState, StepStatus, WorkflowDef,
};
use prism_shared::ports::Created;
use prism_shared::runtime::config;
use prism_shared::runtime::metrics::{self, Metric};
use prism_shared::runtime::routes::ProcessorQueues;
use prism_shared::{ConfigError, Envelope, JobEvent, JobEventEnvelope, JobId, JobStatus, StoreError};
use serde::Deserialize;

pub const SOURCE: &str = "workflow";

/// How many times a decision that lost a race is taken again.
const MAX_CONFLICTS: usize = 8;

#[derive(Debug, Clone)]
pub struct Config {
    /// Where each step's processor takes work, by modality and lane.
    pub routes: ProcessorQueues,
    /// This function's own queue, where each step's deadline waits.
    pub workflow_queue_url: String,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self { routes: ProcessorQueues::from_env()?, workflow_queue_url: config::required("WORKFLOW_QUEUE_URL")? })
    }
}

/// SQS's longest delay: a deadline further off waits in several hops.
const MAX_DELAY: std::time::Duration = std::time::Duration::from_secs(15 * 60);

pub type Deps = prism_shared::ports::Deps<Config>;

/// What the workflow queue carries.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Message {
    Command(Command),
    Event(JobEvent),
}

pub async fn handle(deps: &Deps, event: SqsEvent) -> SqsBatchResponse {
    sqs_batch::process_batch(event, deps.queue.as_ref(), Backoff::default(), sqs_batch::AtOnce::InTurn, |msg| handle_message(deps, msg))
        .await
}

async fn handle_message(deps: &Deps, msg: SqsMessage) -> Result<(), HandlerError> {
    let env: Envelope<Message> = envelope::decode(msg.body.as_deref().unwrap_or_default())?;
    let job_id = env.job_id.ok_or_else(|| HandlerError::Malformed("a workflow message names its job".into()))?;
    // A message back after a failed or interrupted attempt may find its
    // step jobs created but never sent; a duplicate copy (first receive)
    // finds them sent, and must not start them twice.
    let resend = Resend(sqs_batch::receive_count(&msg) > 1);
    match (env.body, env.run) {
        (Message::Command(Command::StartRun { workflow }), _) => start(deps, &job_id, &workflow, resend).await,
        (Message::Command(Command::StepDeadline { step, attempt, due_at }), _) => {
            let now = Utc::now();
            if now < due_at {
                // Further off than one SQS delay: wait another hop.
                return send_deadline(deps, &job_id, &env.trace_id, (&step, attempt), due_at).await;
            }
            advance(deps, &job_id, None, resend, |def, root, run| {
                run.on_step_deadline(def, &root.id, root.cancel_requested, (&step, attempt, due_at), now)
            })
            .await
        }
        (Message::Command(other), _) => Err(HandlerError::Malformed(format!("{other:?} is not for the workflow queue"))),
        (Message::Event(JobEvent::CancelRequested), Some(RunRef { step: None, .. })) => {
            tracing::info!(run_id = %job_id, "run cancel requested");
            advance(deps, &job_id, None, resend, |def, root, run| run.on_cancel(def, &root.id, Utc::now())).await
        }
        (Message::Event(event), Some(RunRef { run_id, step: Some(step), attempt })) => {
            let attempt = attempt.unwrap_or(1);
            let (outcome, result) = match event {
                JobEvent::Completed { result, outputs } => (StepOutcome::Completed { outputs }, Some(result)),
                JobEvent::Failed(failure) => (StepOutcome::Failed(failure), None),
                JobEvent::Cancelled => (StepOutcome::Cancelled, None),
                _ => return Ok(()),
            };
            tracing::info!(%run_id, %step, attempt, outcome = ?outcome, "step ended");
            // The run's result is the result step's, which is at hand when it is the one ending.
            let result = result.map(|r| (step.clone(), r));
            let end = StepEnd { step, attempt, outcome };
            advance(deps, &run_id, result, resend, |def, root, run| {
                run.on_step_outcome(def, &root.id, root.cancel_requested, &end, Utc::now())
            })
            .await
        }
        // The root's other events, and any job outside a run (the subscription's filter keeps those out).
        (Message::Event(_), _) => Ok(()),
    }
}

/// Starts the run on its classified root job (once: a redelivery finds it
/// started and makes sure of its first steps).
async fn start(deps: &Deps, root_id: &JobId, name: &str, resend: Resend) -> Result<(), HandlerError> {
    let def = workflow::find(name).map_err(|e| HandlerError::Malformed(e.to_string()))?;
    let root = get(deps, root_id).await?;
    if root.status.is_terminal() {
        return Ok(());
    }
    let root = match &root.run {
        Some(_) => root,
        None => {
            let run = RunState::start(def, root_id, Utc::now());
            match lifecycle::record(deps.jobs.as_ref(), root_id, SOURCE, JobEvent::RunStarted { run }).await {
                Ok(recorded) => recorded.job().clone(),
                Err(LifecycleError::Refused { error, .. }) => {
                    tracing::info!(%error, "root job moved on; run not started");
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    tracing::info!(run_id = %root_id, workflow = name, "run started");
    let run = root.run.as_ref().ok_or_else(|| HandlerError::Malformed("root job lost its run".into()))?;
    for step in run.steps.iter().filter(|s| s.status == StepStatus::Running) {
        ensure_step(deps, def, &root, step, resend).await?;
    }
    Ok(())
}

/// Whether a step job found created but still queued gets its command again.
#[derive(Debug, Clone, Copy)]
struct Resend(bool);

/// Decides with `decide` on the root job as read and records the decision
/// only if the job has not changed since (else decides again on the newer
/// job), then carries it out.
async fn advance<F>(deps: &Deps, run_id: &JobId, result: Option<(String, JobResult)>, resend: Resend, decide: F) -> Result<(), HandlerError>
where
    F: Fn(&WorkflowDef, &Job, &RunState) -> Decision,
{
    for _ in 0..MAX_CONFLICTS {
        let root = get(deps, run_id).await?;
        if root.status.is_terminal() {
            return Ok(());
        }
        let Some(run) = &root.run else {
            // A cancel of a root job that never started its run ended it at once.
            return Ok(());
        };
        let def = workflow::find(&run.workflow).map_err(|e| HandlerError::Malformed(e.to_string()))?;
        let decision = decide(def, &root, run);
        if decision == Decision::default() {
            // Nothing new: a redelivery. Back after a failed attempt, what
            // that attempt's decision asked for may not have happened: do it
            // again. A duplicate copy (first receive) only makes sure the run
            // ended if it has; its original starts the steps.
            let Resend(retried) = resend;
            let running = run.steps.iter().filter(|s| retried && s.status == StepStatus::Running);
            let redo = Decision {
                changes: running.cloned().collect(),
                cancel: Vec::new(),
                end: decision.end.or_else(|| run.settled(def, root.cancel_requested)),
            };
            return carry_out(deps, def, &root, &redo, result, resend).await;
        }
        if decision.changes.is_empty() {
            // Only jobs to stop (a cancel while every step runs): nothing to record.
            return carry_out(deps, def, &root, &decision, result, resend).await;
        }
        let event = JobEvent::RunAdvanced { changes: decision.changes.clone() };
        match lifecycle::record_on(deps.jobs.as_ref(), &root, SOURCE, event).await {
            Ok(Some(root)) => {
                emit_step_metrics(&run.workflow, &decision.changes);
                return carry_out(deps, def, &root, &decision, result, resend).await;
            }
            Ok(None) => tracing::info!(%run_id, "run changed meanwhile; deciding again"),
            Err(LifecycleError::Refused { error, .. }) => {
                tracing::info!(%error, "root job moved on");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Conflict(run_id.clone()).into())
}

/// The metrics of recorded step changes: each ended step's duration by
/// workflow, step and status; each retry started. Written once per change:
/// only the writer whose decision was recorded writes them.
fn emit_step_metrics(workflow: &str, changes: &[StepState]) {
    for step in changes {
        let dimensions = [("Workflow", workflow), ("Step", step.name.as_str())];
        match (step.status, step.started_at, step.finished_at) {
            (StepStatus::Running, ..) if step.attempt > 1 => metrics::emit(&dimensions, &[Metric::count("StepRetries")]),
            (status, Some(started), Some(finished)) if status.is_finished() => {
                let ms = (finished - started).num_milliseconds().max(0) as f64;
                metrics::emit(
                    &[("Workflow", workflow), ("Step", step.name.as_str()), ("Status", status.into())],
                    &[Metric::millis("StepMs", ms)],
                );
            }
            _ => {}
        }
    }
}

/// Does what a recorded decision asks: stop the jobs it cancels, start the
/// steps it set running, and end the root job when the run ended.
async fn carry_out(
    deps: &Deps,
    def: &WorkflowDef,
    root: &Job,
    decision: &Decision,
    result: Option<(String, JobResult)>,
    resend: Resend,
) -> Result<(), HandlerError> {
    for job_id in &decision.cancel {
        if let Some(job) = deps.jobs.get(job_id).await? {
            match lifecycle::request_cancel(deps.jobs.as_ref(), &job, SOURCE).await {
                Ok(_) | Err(LifecycleError::Refused { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    for step in decision.changes.iter().filter(|s| s.status == StepStatus::Running) {
        ensure_step(deps, def, root, step, resend).await?;
    }
    let Some(end) = &decision.end else { return Ok(()) };
    let run = root.run.as_ref().ok_or_else(|| HandlerError::Malformed("root job lost its run".into()))?;
    let event = match end {
        RunEnd::Completed => {
            let result_step = &def.result_step().name;
            let result = match result {
                Some((step, result)) if &step == result_step => result,
                _ => result_of(deps, run, result_step).await?,
            };
            JobEvent::Completed { result, outputs: run.outputs() }
        }
        RunEnd::Failed(failure) => JobEvent::Failed(failure.clone()),
        RunEnd::Cancelled => JobEvent::Cancelled,
    };
    tracing::info!(run_id = %root.id, end = event.event_type(), "run ended");
    match lifecycle::record(deps.jobs.as_ref(), &root.id, SOURCE, event).await {
        Ok(_) | Err(LifecycleError::Refused { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The result stored on a completed step's job.
async fn result_of(deps: &Deps, run: &RunState, step: &str) -> Result<JobResult, HandlerError> {
    let job_id = run.step(step).and_then(|s| s.job_id.clone()).ok_or_else(|| HandlerError::Malformed(format!("step {step} has no job")))?;
    get(deps, &job_id).await?.result.ok_or_else(|| HandlerError::Malformed(format!("step {step}'s job has no result")))
}

/// Makes sure the job of a running step exists and has been handed its
/// work: created once (its id is the same for every start of that attempt),
/// its command sent when it was created now, or again when `resend` and it
/// is still waiting to be picked up (the message is back after an attempt
/// that may have died between creating and sending; a command sent twice
/// finds the job started and is ignored). `combine` runs here.
async fn ensure_step(deps: &Deps, def: &WorkflowDef, root: &Job, state: &StepState, Resend(resend): Resend) -> Result<(), HandlerError> {
    let step = def.step(&state.name).ok_or_else(|| HandlerError::Malformed(format!("no step {} in {}", state.name, def.name)))?;
    let job_id = state.job_id.clone().ok_or_else(|| HandlerError::Malformed(format!("running step {} has no job", state.name)))?;
    let run = root.run.as_ref().ok_or_else(|| HandlerError::Malformed("root job lost its run".into()))?;
    let (input, mime) = match step_input(step, root, run) {
        Ok(found) => found,
        Err(failure) => return fail_step_job(deps, root, step, state, &job_id, failure).await,
    };
    let job = step_job(root, step, state, &job_id, input.clone(), mime.clone());
    let created = lifecycle::create(deps.jobs.as_ref(), &job, &[JobEventEnvelope::for_job(SOURCE, &job, job.created_event())]).await?;
    let waiting = match created {
        Created::New => true,
        Created::Existing(existing) => resend && existing.status == JobStatus::Queued && !existing.cancel_requested,
    };
    if !waiting && step.action != Action::Combine {
        return Ok(());
    }
    let Some(modality) = step.action.modality() else { return combine(deps, def, run, step, &job_id).await };
    let url = deps
        .config
        .routes
        .get(modality, root.priority.lane())
        .ok_or_else(|| HandlerError::Malformed(format!("no {modality} queue is configured")))?;
    let delay = state.not_before.map(|t| (t - Utc::now()).to_std().unwrap_or_default()).unwrap_or_default();
    let command = Envelope::new(
        SOURCE,
        &root.trace_id,
        Some(job_id.clone()),
        None,
        Command::Process { input, modality, mime, action: Some(step.action), stored: None, content: None },
    );
    deps.queue.send_after(url, command.to_json(), delay).await?;
    tracing::info!(step = %step.name, attempt = state.attempt, %job_id, delay_s = delay.as_secs_f64(), "step started");
    metrics::emit(&[("Lane", &lanes::lane_name(modality, root.priority.lane()))], &[Metric::count("JobsQueued")]);
    // The step's timeout is enforced by a message to this function at its
    // deadline; a step that ended by then makes it a no-op.
    if let Some(due_at) = run.deadline(def, &state.name) {
        send_deadline(deps, &root.id, &root.trace_id, (&state.name, state.attempt), due_at).await?;
    }
    Ok(())
}

/// Sends `step`'s deadline to this function's queue, due at `due_at` (or
/// as close as one SQS delay gets).
async fn send_deadline(
    deps: &Deps,
    run_id: &JobId,
    trace_id: &str,
    (step, attempt): (&str, u32),
    due_at: chrono::DateTime<Utc>,
) -> Result<(), HandlerError> {
    let delay = (due_at - Utc::now()).to_std().unwrap_or_default().min(MAX_DELAY);
    let command = Command::StepDeadline { step: step.to_owned(), attempt, due_at };
    let message = Envelope::new(SOURCE, trace_id, Some(run_id.clone()), None, command);
    deps.queue.send_after(&deps.config.workflow_queue_url, message.to_json(), delay).await?;
    Ok(())
}

/// The job of one attempt of `step`, ready for its processor.
fn step_job(root: &Job, step: &StepDef, state: &StepState, job_id: &JobId, input: InputObject, mime: String) -> Job {
    let mut job = Job::new(job_id.clone(), root.owner.clone(), root.priority, input.uri.clone(), root.trace_id.clone(), Utc::now());
    job.phase = "waiting".into();
    job.modality = step.action.modality();
    job.mime = Some(mime);
    job.input = Some(input);
    job.step_of = Some(StepOf { run_id: root.id.clone(), step: step.name.clone(), attempt: state.attempt });
    job
}

/// The object a step reads and its type: the upload, or a parent's output.
fn step_input(step: &StepDef, root: &Job, run: &RunState) -> Result<(InputObject, String), JobFailure> {
    let upload = || {
        let input = root.input.clone().ok_or_else(|| JobFailure::new("input_missing", "the run's root job has no upload"))?;
        Ok((input, root.mime.clone().unwrap_or_else(|| "application/octet-stream".into())))
    };
    match &step.input {
        _ if step.action == Action::Combine => upload(),
        InputRef::Upload => upload(),
        InputRef::Output { step: parent, name } => {
            let output = run
                .step(parent)
                .and_then(|p| p.outputs.iter().find(|o| &o.name == name))
                .ok_or_else(|| JobFailure::new("input_not_produced", format!("step `{parent}` wrote no `{name}`")))?;
            let mime = output.content_type.split(';').next().unwrap_or_default().trim().to_owned();
            Ok((InputObject { uri: output.uri.clone(), size: output.size, etag: String::new() }, mime))
        }
    }
}

/// A step whose input cannot be found: its job is created failed, so the
/// run hears of it through the same event as any other failure.
async fn fail_step_job(
    deps: &Deps,
    root: &Job,
    step: &StepDef,
    state: &StepState,
    job_id: &JobId,
    failure: JobFailure,
) -> Result<(), HandlerError> {
    let job = step_job(root, step, state, job_id, InputObject { uri: root.upload.clone(), size: 0, etag: String::new() }, String::new());
    lifecycle::create(deps.jobs.as_ref(), &job, &[JobEventEnvelope::for_job(SOURCE, &job, job.created_event())]).await?;
    match lifecycle::record(deps.jobs.as_ref(), job_id, SOURCE, JobEvent::Failed(failure)).await {
        Ok(_) | Err(LifecycleError::Refused { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Runs a `combine` step: its parents' results side by side. Deterministic,
/// so doing it again on a redelivery records nothing new.
async fn combine(deps: &Deps, def: &WorkflowDef, run: &RunState, step: &StepDef, job_id: &JobId) -> Result<(), HandlerError> {
    let Some(work) = Run::start(deps.jobs.as_ref(), deps.blobs.as_ref(), SOURCE, job_id.clone(), "combining").await? else {
        return Ok(());
    };
    let mut results = BTreeMap::new();
    for parent in step.parents() {
        if run.step(parent).is_some_and(|s| s.status == StepStatus::Completed) {
            results.insert(parent.to_owned(), result_of(deps, run, parent).await?);
        }
    }
    let combined = workflow::combine(def, run, step, &results);
    work.complete(JobResult::Workflow(Box::new(combined)), Vec::new()).await
}

async fn get(deps: &Deps, id: &JobId) -> Result<Job, HandlerError> {
    Ok(deps.jobs.get(id).await?.ok_or_else(|| LifecycleError::NotFound(id.clone()))?)
}
