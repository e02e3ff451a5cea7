//! The messages an SQS batch's handlers send, sent together.
//!
//! Intake and classify handle a batch's ten messages at once, and each ends
//! by sending one command to the next stage's queue: ten `SendMessage`s a
//! batch, about a fifth of a job's calls. SQS takes up to ten in one
//! `SendMessageBatch`, billed as one request. An [`Outbox`] holds each send
//! until every handler still running is waiting in one (or has finished),
//! then sends what it holds in batches, one per queue, and gives each
//! handler its own message's answer. A handler reads as it did with
//! `Queue::send`: its send returns once its message is on the queue, or
//! with that message's own error, so a refused entry fails only its own SQS
//! message, which comes back as before, and nothing runs on after a send
//! that did not happen.
//!
//! The wait costs no more than the batch took anyway: the invocation ends
//! when its slowest message does, and a message's command now leaves when
//! the slowest of those still running reaches its send.

use std::sync::{Mutex, PoisonError};

use tokio::sync::oneshot;

use crate::ports::Queue;
use crate::ports::error::QueueError;

/// One batch's sends; see the module documentation.
#[derive(Debug)]
pub struct Outbox<'q> {
    queue: &'q dyn Queue,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Handlers started and not yet finished.
    running: usize,
    /// Sends held, in the order they were made.
    held: Vec<Held>,
    /// Sends taken by a flush whose answers have not come yet: their
    /// handlers are waiting too.
    in_flight: usize,
}

#[derive(Debug)]
struct Held {
    queue_url: String,
    body: String,
    answer: oneshot::Sender<Result<(), QueueError>>,
}

impl<'q> Outbox<'q> {
    pub fn new(queue: &'q dyn Queue) -> Self {
        Self { queue, state: Mutex::default() }
    }

    /// The queue the sends go to.
    pub fn queue(&self) -> &'q dyn Queue {
        self.queue
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `count` handlers start: from now on, sends wait for each of them to
    /// send or finish.
    pub fn started(&self, count: usize) {
        self.state().running += count;
    }

    /// A handler finished; if it was the last one not waiting, the held
    /// sends go now.
    pub async fn finished(&self) {
        let due = {
            let mut state = self.state();
            state.running -= 1;
            state.take_if_due()
        };
        self.flush(due).await;
    }

    /// Sends `body` to `queue_url` with the batch's other sends; returns
    /// when this message is on the queue, or with its own error.
    pub async fn send(&self, queue_url: &str, body: String) -> Result<(), QueueError> {
        let (answer, answered) = oneshot::channel();
        let due = {
            let mut state = self.state();
            state.held.push(Held { queue_url: queue_url.to_owned(), body, answer });
            state.take_if_due()
        };
        self.flush(due).await;
        // Dropped unanswered only if the flush carrying it was cancelled
        // (the invocation cut short): whether it went is unknown, and the
        // message comes back either way.
        answered.await.unwrap_or_else(|_| Err(QueueError::Unavailable("the batch send carrying this message was cancelled".into())))
    }

    /// Sends `due` (one batch per queue, at once) and answers each sender.
    async fn flush(&self, due: Vec<Held>) {
        if due.is_empty() {
            return;
        }
        let mut by_queue: Vec<(String, Vec<Held>)> = Vec::new();
        for held in due {
            match by_queue.iter_mut().find(|(url, _)| *url == held.queue_url) {
                Some((_, group)) => group.push(held),
                None => by_queue.push((held.queue_url.clone(), vec![held])),
            }
        }
        futures::future::join_all(by_queue.into_iter().map(|(url, group)| async move {
            let (bodies, answers): (Vec<String>, Vec<_>) = group.into_iter().map(|held| (held.body, held.answer)).unzip();
            let results = self.queue.send_batch(&url, bodies).await;
            let answered = answers.len();
            for (answer, result) in answers.into_iter().zip(results) {
                // A sender that is gone (cancelled) needs no answer.
                let _ = answer.send(result);
            }
            // Its senders can run on now (once this future yields), so they
            // are no longer waiting.
            self.state().in_flight -= answered;
        }))
        .await;
    }
}

impl State {
    /// The held sends, taken for a flush, once no running handler can add
    /// one more: every one is waiting on a send (held or in flight).
    fn take_if_due(&mut self) -> Vec<Held> {
        if self.held.is_empty() || self.held.len() + self.in_flight < self.running {
            return Vec::new();
        }
        self.in_flight += self.held.len();
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use async_trait::async_trait;
    use futures::StreamExt as _;

    use super::*;

    /// Records each batch's bodies; refuses any body that is "refused".
    #[derive(Debug, Default)]
    struct RecordingQueue {
        batches: Mutex<Vec<(String, Vec<String>)>>,
        sending: AtomicUsize,
        most_sending: AtomicUsize,
    }

    #[async_trait]
    impl Queue for RecordingQueue {
        async fn send_after(&self, _: &str, _: String, _: Duration) -> Result<(), QueueError> {
            unreachable!("the outbox sends in batches")
        }
        async fn send_batch(&self, queue_url: &str, bodies: Vec<String>) -> Vec<Result<(), QueueError>> {
            self.most_sending.fetch_max(self.sending.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(if queue_url == "slow" { 40 } else { 5 })).await;
            self.sending.fetch_sub(1, Ordering::SeqCst);
            let results =
                bodies.iter().map(|body| if body == "refused" { Err(QueueError::BadArn(body.clone())) } else { Ok(()) }).collect();
            self.batches.lock().unwrap_or_else(PoisonError::into_inner).push((queue_url.to_owned(), bodies));
            results
        }
        async fn retry_later(&self, _: &str, _: &str, _: Duration) -> Result<(), QueueError> {
            Ok(())
        }
        async fn send_again(&self, _: &str, _: String, _: Duration) -> Result<(), QueueError> {
            Ok(())
        }
    }

    /// Runs one handler per `(queue, body, delay before sending)` at once,
    /// as `process_batch` does, each sending once (or, with no body,
    /// finishing after its delay without sending); returns each one's answer.
    async fn run(queue: &RecordingQueue, sends: &[(&str, &str, u64)]) -> Vec<Result<(), QueueError>> {
        let outbox = Outbox::new(queue);
        let outbox = &outbox;
        outbox.started(sends.len());
        futures::stream::iter(sends.iter().copied())
            .map(|(url, body, delay)| async move {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                let result = if body.is_empty() { Ok(()) } else { outbox.send(url, body.to_owned()).await };
                outbox.finished().await;
                result
            })
            .buffered(usize::MAX)
            .collect()
            .await
    }

    #[tokio::test]
    async fn sends_made_at_different_moments_go_in_one_batch_per_queue() {
        let queue = RecordingQueue::default();
        let answers = run(&queue, &[("a", "1", 0), ("b", "2", 10), ("a", "3", 30), ("a", "4", 20)]).await;
        assert!(answers.iter().all(Result::is_ok), "{answers:?}");
        let mut batches = queue.batches.into_inner().unwrap_or_else(PoisonError::into_inner);
        batches.sort();
        assert_eq!(batches, [("a".to_owned(), vec!["1".to_owned(), "4".into(), "3".into()]), ("b".to_owned(), vec!["2".to_owned()])]);
    }

    #[tokio::test]
    async fn a_refused_message_fails_only_its_own_send() {
        let queue = RecordingQueue::default();
        let answers = run(&queue, &[("a", "1", 0), ("a", "refused", 5), ("a", "3", 10)]).await;
        assert!(answers[0].is_ok() && answers[2].is_ok(), "{answers:?}");
        assert!(matches!(answers[1], Err(QueueError::BadArn(_))), "{answers:?}");
        assert_eq!(queue.batches.into_inner().unwrap_or_else(PoisonError::into_inner).len(), 1);
    }

    #[tokio::test]
    async fn a_handler_that_finishes_without_sending_releases_the_others() {
        let queue = RecordingQueue::default();
        let answers = tokio::time::timeout(Duration::from_secs(5), run(&queue, &[("a", "1", 0), ("a", "", 20)]))
            .await
            .expect("the send went once the other handler finished");
        assert!(answers.iter().all(Result::is_ok));
        assert_eq!(queue.batches.into_inner().unwrap_or_else(PoisonError::into_inner), [("a".to_owned(), vec!["1".to_owned()])]);
    }

    #[tokio::test]
    async fn a_send_made_while_a_batch_is_in_flight_does_not_wait_for_it() {
        // Two handlers send at once, to a fast queue and a slow one. The fast
        // one's sender is answered first and sends again while the slow
        // batch is in flight: nobody else can send, so it goes at once.
        let queue = RecordingQueue::default();
        let outbox = Outbox::new(&queue);
        let outbox = &outbox;
        outbox.started(2);
        let twice = async {
            outbox.send("fast", "1".into()).await.expect("first");
            outbox.send("fast", "2".into()).await.expect("second");
            outbox.finished().await;
        };
        let once = async {
            outbox.send("slow", "3".into()).await.expect("slow");
            outbox.finished().await;
        };
        tokio::join!(twice, once);
        assert_eq!(queue.most_sending.load(Ordering::SeqCst), 2, "the second fast batch went while the slow one was in flight");
        let batches = queue.batches.into_inner().unwrap_or_else(PoisonError::into_inner);
        let sent: Vec<&str> = batches.iter().map(|(_, bodies)| bodies[0].as_str()).collect();
        assert_eq!(sent, ["1", "2", "3"], "both fast batches were answered before the slow one");
    }
}
