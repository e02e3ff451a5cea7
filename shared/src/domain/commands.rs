//! Commands: the messages that move a job from one function to the next.
//! They travel in an [`crate::domain::envelope::Envelope`] like every other message.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::job::{InputObject, Job, Modality};

/// A job as its sender last stored it, with the store's `watched` mark
/// (which the job's JSON leaves out, and a write is conditional on).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredJob {
    pub job: Job,
    #[serde(default)]
    pub watched: bool,
}

impl StoredJob {
    /// The largest job a command carries, as JSON: well inside SQS's 256 KB
    /// message, and a small job's is about a kilobyte.
    pub const MAX_BYTES: usize = 16 * 1024;

    /// `job` to carry in a command, unless its JSON is over [`Self::MAX_BYTES`]
    /// (the receiver then reads it).
    pub fn of(job: &Job) -> Option<Box<Self>> {
        let size = serde_json::to_vec(job).map_or(usize::MAX, |json| json.len());
        (size <= Self::MAX_BYTES).then(|| Box::new(Self { job: job.clone(), watched: job.watched }))
    }

    /// The job, with its `watched` mark.
    pub fn into_job(self) -> Job {
        Job { watched: self.watched, ..self.job }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload")]
pub enum Command {
    /// intake → classify: the job's input is uploaded; decide what it is.
    #[serde(rename = "job.classify")]
    Classify {
        input: InputObject,
        /// The job as the sender stored it, so that classify records its
        /// classification on it without reading it first; a copy that moved
        /// since conflicts and is read again. Absent from older senders and
        /// for a job over [`StoredJob::MAX_BYTES`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stored: Option<Box<StoredJob>>,
    },
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
        /// The job as the sender stored it, so that the processor's first
        /// write (its start) is committed on it without reading the job
        /// first; if the job moved since, that write conflicts and the job is
        /// read after all. Absent from older senders and for large jobs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stored: Option<Box<StoredJob>>,
        /// The whole input, when classify's sniffing read already held all
        /// of it (an input of at most [`Command::MAX_CARRIED_CONTENT`]
        /// bytes): the processor uses it instead of reading the object
        /// again. Base64 in the JSON; absent from older senders and for
        /// larger inputs.
        #[serde(default, skip_serializing_if = "Option::is_none", with = "base64_content")]
        content: Option<bytes::Bytes>,
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

impl Command {
    /// The largest input a `job.process` command carries whole: what
    /// classify's sniffing read of [`crate::content::sniff::SNIFF_BYTES`]
    /// holds, a third more as base64 in a message of SQS's 256 KB.
    pub const MAX_CARRIED_CONTENT: usize = crate::content::sniff::SNIFF_BYTES;
}

/// `Option<Bytes>` as a base64 string.
mod base64_content {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(content: &Option<bytes::Bytes>, serializer: S) -> Result<S::Ok, S::Error> {
        match content {
            Some(bytes) => serializer.serialize_str(&STANDARD.encode(bytes)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<bytes::Bytes>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|text| STANDARD.decode(text).map(bytes::Bytes::from).map_err(serde::de::Error::custom))
            .transpose()
    }
}
