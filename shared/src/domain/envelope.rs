//! Envelope v1: the shape of every message Prism sends, on queues, topics and
//! WebSockets. The body's `event_type` and `payload` sit beside the envelope's
//! own fields, so one JSON object carries everything (snake_case throughout).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::job::{Job, JobEvent, JobId};

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<B> {
    pub schema_version: u32,
    pub event_id: Uuid,
    pub source: String,
    pub timestamp: DateTime<Utc>,
    pub trace_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<JobId>,
    /// The job's sequence number for job events; absent on commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// For events of a workflow run's jobs: which run, and which step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunRef>,
    /// `event_type` and `payload`.
    #[serde(flatten)]
    pub body: B,
}

impl<B> Envelope<B> {
    pub fn new(source: &str, trace_id: &str, job_id: Option<JobId>, seq: Option<u64>, body: B) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            event_id: Uuid::now_v7(),
            source: source.to_owned(),
            timestamp: Utc::now(),
            trace_id: trace_id.to_owned(),
            job_id,
            seq,
            run: None,
            body,
        }
    }
}

impl<B: Serialize> Envelope<B> {
    /// The wire form. Envelopes hold only plain data, which always serialises.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| unreachable!("envelope serialisation failed: {e}"))
    }
}

/// How old the oldest of some envelopes' `timestamp`s is now, in
/// milliseconds: how far a stage runs behind the writes it handles.
pub fn oldest_age_ms(timestamps: impl IntoIterator<Item = DateTime<Utc>>) -> Option<i64> {
    timestamps.into_iter().min().map(|t| (Utc::now() - t).num_milliseconds())
}

/// A new trace id (32 hex digits, as W3C trace context and X-Ray use).
pub fn new_trace_id() -> String {
    Uuid::new_v4().simple().to_string()
}

/// A job event as it is stored in the job's log and pushed to clients.
pub type JobEventEnvelope = Envelope<JobEvent>;

impl JobEventEnvelope {
    /// The envelope recording `event` as the change that brought `job` to its current `seq`.
    pub fn for_job(source: &str, job: &Job, event: JobEvent) -> Self {
        let mut envelope = Self::new(source, &job.trace_id, Some(job.id.clone()), Some(job.seq), event);
        envelope.run = RunRef::of(job);
        envelope
    }
}

/// The run a job's event belongs to: the root job's own (no step), or a step's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRef {
    pub run_id: JobId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
}

impl RunRef {
    pub fn of(job: &Job) -> Option<Self> {
        match (&job.step_of, &job.workflow) {
            (Some(s), _) => Some(Self { run_id: s.run_id.clone(), step: Some(s.step.clone()), attempt: Some(s.attempt) }),
            (None, Some(_)) => Some(Self { run_id: job.id.clone(), step: None, attempt: None }),
            (None, None) => None,
        }
    }
}

/// Why an envelope could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("message is not a valid envelope: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("schema_version {0} is not supported (this build reads {SCHEMA_VERSION})")]
    UnsupportedVersion(u32),
}

/// Reads an envelope, refusing versions this build does not know.
pub fn decode<B: serde::de::DeserializeOwned>(body: &str) -> Result<Envelope<B>, EnvelopeError> {
    let env: Envelope<B> = serde_json::from_str(body)?;
    if env.schema_version != SCHEMA_VERSION {
        return Err(EnvelopeError::UnsupportedVersion(env.schema_version));
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::job::JobFailure;

    #[test]
    fn job_events_serialise_flat_with_type_and_payload() {
        let env = Envelope::new("test", "trace-1", None, Some(4), JobEvent::Failed(JobFailure::new("empty_upload", "empty upload")));
        let v = serde_json::to_value(&env).expect("serialise");
        assert_eq!(v["schema_version"], 1);
        assert_eq!(v["event_type"], "job.failed");
        assert_eq!(v["payload"]["code"], "empty_upload");
        assert_eq!(v["seq"], 4);
        let back: JobEventEnvelope = decode(&v.to_string()).expect("decode");
        assert_eq!(back, env);
    }

    #[test]
    fn unknown_versions_and_garbage_are_refused() {
        let mut v = serde_json::to_value(Envelope::new("t", "x", None, None, JobEvent::Cancelled)).expect("serialise");
        v["schema_version"] = 2.into();
        assert!(matches!(decode::<JobEvent>(&v.to_string()), Err(EnvelopeError::UnsupportedVersion(2))));
        assert!(matches!(decode::<JobEvent>("{not json"), Err(EnvelopeError::Malformed(_))));
    }
}
