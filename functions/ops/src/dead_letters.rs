//! Listing and redriving the dead letters `dead-letter` kept.

use std::collections::BTreeMap;

use chrono::Utc;
use prism_shared::app::auth::Claims;
use prism_shared::app::lifecycle::{self, LifecycleError};
use prism_shared::domain::dead_letters::DeadLetter;
use prism_shared::{JobEvent, JobId};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{Deps, OpsError};

pub const SOURCE: &str = "ops";
/// Letters handled per request: a redrive of more is repeated.
const PER_REQUEST: u32 = 100;

/// Reads `REDRIVE_QUEUES`: one `NAME URL` per line.
pub fn parse_queues(text: &str) -> Result<BTreeMap<String, String>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| match line.split_whitespace().collect::<Vec<_>>()[..] {
            [name, url] => Ok((name.to_owned(), url.to_owned())),
            _ => Err(format!("line {}: expected `QUEUE_NAME QUEUE_URL`", i + 1)),
        })
        .collect()
}

/// A dead letter as an operator sees it (its body stays in the table).
#[derive(Debug, Serialize)]
struct Listed<'a> {
    message_id: &'a str,
    dlq: &'a str,
    source_queue: Option<&'a str>,
    jobs: &'a [JobId],
    owner: Option<&'a str>,
    reason: &'a str,
    receive_count: u32,
    dead_lettered_at: chrono::DateTime<Utc>,
    age_s: i64,
}

impl<'a> From<&'a DeadLetter> for Listed<'a> {
    fn from(l: &'a DeadLetter) -> Self {
        Self {
            message_id: &l.message_id,
            dlq: &l.dlq,
            source_queue: l.source_queue.as_deref(),
            jobs: &l.jobs,
            owner: l.owner.as_deref(),
            reason: &l.reason,
            receive_count: l.receive_count,
            dead_lettered_at: l.dead_lettered_at,
            age_s: (Utc::now() - l.dead_lettered_at).num_seconds().max(0),
        }
    }
}

pub async fn list(deps: &Deps, queue: Option<&str>) -> Result<Value, OpsError> {
    let letters = deps.dead_letters.list(u32::MAX).await?;
    let listed: Vec<Listed<'_>> = letters.iter().filter(|l| queue.is_none_or(|q| l.in_queue(q))).map(Listed::from).collect();
    Ok(json!({ "dead_letters": listed }))
}

/// What became of one letter.
enum Outcome {
    /// Its jobs are queued again and the message is back in its queue.
    Redriven,
    /// Its jobs ended another way meanwhile: nothing to run again; the letter is forgotten.
    Discarded(String),
    /// Left as it is, with the reason.
    Skipped(String),
}

pub async fn redrive(deps: &Deps, operator: &Claims, queue: &str, job: Option<&str>) -> Result<Value, OpsError> {
    let letters = deps.dead_letters.list(u32::MAX).await?;
    let chosen: Vec<&DeadLetter> = letters
        .iter()
        .filter(|l| l.in_queue(queue) && job.is_none_or(|id| l.jobs.iter().any(|j| j.as_str() == id)))
        .take(PER_REQUEST as usize)
        .collect();
    let (mut redriven, mut discarded, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
    for letter in chosen {
        let entry = |reason: Option<String>| json!({"message_id": letter.message_id, "jobs": letter.jobs, "reason": reason});
        match redrive_one(deps, letter).await? {
            Outcome::Redriven => redriven.push(entry(None)),
            Outcome::Discarded(why) => discarded.push(entry(Some(why))),
            Outcome::Skipped(why) => skipped.push(entry(Some(why))),
        }
    }
    tracing::info!(operator = %operator.sub, queue, redriven = redriven.len(), discarded = discarded.len(), skipped = skipped.len(), "redrive");
    Ok(json!({ "redriven": redriven, "discarded": discarded, "skipped": skipped }))
}

/// Queues the letter's jobs again, then sends it back, then forgets it. A
/// failure between the steps leaves the letter kept, and redriving it again
/// finishes the work: the jobs are already queued (`job.redriven` is not
/// recorded twice) and a message sent twice runs the job once, as any
/// redelivery does. A job left queued with no message is the sweeper's.
async fn redrive_one(deps: &Deps, letter: &DeadLetter) -> Result<Outcome, OpsError> {
    let Some(source) = letter.source_queue.as_deref() else {
        return Ok(Outcome::Skipped("the dead letter does not name the queue it failed in".into()));
    };
    let Some(url) = deps.config.redrive_queues.get(source) else {
        return Ok(Outcome::Skipped(format!("{source} is not a queue dead letters are sent back to")));
    };
    let mut queued_again = 0;
    for id in &letter.jobs {
        let Some(job) = deps.jobs.get(id).await? else { continue };
        if job.workflow.is_some() || job.step_of.is_some() {
            return Ok(Outcome::Skipped(format!("job {id} is part of a workflow run; runs are not redriven yet")));
        }
        match lifecycle::record(deps.jobs.as_ref(), id, SOURCE, JobEvent::Redriven { queue: source.to_owned() }).await {
            Ok(_) => queued_again += 1,
            // Completed on a late attempt, cancelled, or failed for good: it stays as it ended.
            Err(LifecycleError::Refused { error, .. }) => tracing::info!(job_id = %id, %error, "not redriven"),
            Err(LifecycleError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if !letter.jobs.is_empty() && queued_again == 0 {
        deps.dead_letters.forget(letter).await?;
        return Ok(Outcome::Discarded("its jobs ended another way meanwhile; nothing is run again".into()));
    }
    deps.queue.send(url, letter.body.clone()).await?;
    deps.dead_letters.forget(letter).await?;
    tracing::info!(message_id = %letter.message_id, queue = source, jobs = ?letter.jobs, "dead letter redriven");
    Ok(Outcome::Redriven)
}
