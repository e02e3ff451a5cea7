//! Dead letters as operators see them. The dead-letter queues are drained at
//! once by the `dead-letter` function, so that no job waits on them; each
//! message is kept in the table as a [`DeadLetter`] first, with the jobs it
//! names and the reason their last attempt gave, until an operator redrives
//! it to its source queue or it expires.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::job::JobId;

/// How long a dead letter is kept for an operator to look at (SQS's own
/// longest retention).
pub const KEPT_FOR: chrono::Duration = chrono::Duration::days(14);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The SQS message id: one record per message, however often it is delivered.
    pub message_id: String,
    /// The dead-letter queue's name.
    pub dlq: String,
    /// The queue it failed in (`DeadLetterQueueSourceArn`'s name), where a redrive sends it.
    pub source_queue: Option<String>,
    pub jobs: Vec<JobId>,
    /// The owner of the first job.
    pub owner: Option<String>,
    /// Why: the last failed attempt the job's log recorded, or what is known.
    pub reason: String,
    /// Receives before it was given up, as SQS counted them.
    pub receive_count: u32,
    pub dead_lettered_at: DateTime<Utc>,
    /// The message as it was sent: Prism's messages carry everything in the body.
    pub body: String,
}

impl DeadLetter {
    /// Whether `queue` names this letter's queue: the DLQ's full name, or the
    /// short name of its modality or stage (`text` for `prism-dev-text-dlq`).
    pub fn in_queue(&self, queue: &str) -> bool {
        let short = self.dlq.strip_suffix("-dlq").unwrap_or(&self.dlq);
        self.dlq == queue || short == queue || short.ends_with(&format!("-{queue}"))
    }

    pub fn expires_at(&self) -> DateTime<Utc> {
        self.dead_lettered_at + KEPT_FOR
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_is_named_in_full_or_by_its_short_name() {
        let letter = DeadLetter {
            message_id: "m".into(),
            dlq: "prism-dev-text-dlq".into(),
            source_queue: Some("prism-dev-text-bulk".into()),
            jobs: Vec::new(),
            owner: None,
            reason: String::new(),
            receive_count: 3,
            dead_lettered_at: Utc::now(),
            body: String::new(),
        };
        assert!(letter.in_queue("prism-dev-text-dlq"));
        assert!(letter.in_queue("text"));
        assert!(!letter.in_queue("ext"));
        assert!(!letter.in_queue("image"));
    }
}
