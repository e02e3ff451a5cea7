//! Commands: the messages that move a job from one function to the next.
//! They travel in an [`crate::domain::envelope::Envelope`] like every other message.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::job::{InputObject, Modality};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload")]
pub enum Command {
    /// intake → classify: the job's input is uploaded; decide what it is.
    #[serde(rename = "job.classify")]
    Classify { input: InputObject },
    /// classify → a processor queue: do the work.
    #[serde(rename = "job.process")]
    Process {
        input: InputObject,
        modality: Modality,
        mime: String,
        /// For a workflow step: the action, when it asks for part of the
        /// processor's work (`image-thumbnails`); absent, all of it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        action: Option<crate::domain::workflow::Action>,
    },
    /// classify → workflow: run the named workflow on the classified job
    /// (its input and type are on the job).
    #[serde(rename = "run.start")]
    StartRun { workflow: String },
    /// workflow → itself, delayed: `step`'s `attempt` must have ended by
    /// `due_at` (its `timeout_s`); if it is still running then, it fails.
    #[serde(rename = "run.step_deadline")]
    StepDeadline { step: String, attempt: u32, due_at: DateTime<Utc> },
}
