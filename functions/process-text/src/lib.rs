//! process-text: decodes a text upload (UTF-8, UTF-16 with a BOM, otherwise
//! Latin-1) and counts bytes, characters, lines and words.

use std::sync::Arc;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use prism_shared::commands::Command;
use prism_shared::envelope::{self, EnvelopeError};
use prism_shared::job::JobFailure;
use prism_shared::lifecycle::{self, LifecycleError};
use prism_shared::ports::{BlobStore, JobStore, Queue};
use prism_shared::results::{JobResult, TextEncoding, TextResult};
use prism_shared::sqs_batch::{self, Backoff};
use prism_shared::{BlobError, ConfigError, Envelope, JobEvent, QueueError, Retryable, StoreError, config};

pub const SOURCE: &str = "process-text";

#[derive(Debug, Clone)]
pub struct Config {
    /// Larger texts are refused rather than read into memory.
    pub max_bytes: u64,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self { max_bytes: config::parsed_or("TEXT_MAX_BYTES", 64 * 1024 * 1024)? })
    }
}

#[derive(Debug, Clone)]
pub struct Deps {
    pub jobs: Arc<dyn JobStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub queue: Arc<dyn Queue>,
    pub config: Config,
}

#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error("expected a job.process command with a job_id")]
    WrongCommand,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl Retryable for TextError {
    fn is_retryable(&self) -> bool {
        match self {
            Self::Envelope(_) | Self::WrongCommand => false,
            Self::Store(e) => e.is_retryable(),
            Self::Lifecycle(e) => e.is_retryable(),
            Self::Blob(e) => e.is_retryable(),
            Self::Queue(e) => e.is_retryable(),
        }
    }
}

pub async fn handle(deps: &Deps, event: SqsEvent) -> SqsBatchResponse {
    sqs_batch::process_batch(event, deps.queue.as_ref(), Backoff::default(), |msg| handle_message(deps, msg)).await
}

async fn handle_message(deps: &Deps, msg: SqsMessage) -> Result<(), TextError> {
    let env: Envelope<Command> = envelope::decode(msg.body.as_deref().unwrap_or_default())?;
    let (Some(job_id), Command::Process { input, .. }) = (env.job_id, env.body) else {
        return Err(TextError::WrongCommand);
    };
    tracing::info!(job_id = %job_id, trace_id = %env.trace_id, uri = %input.uri, "processing text");
    let record = |event| lifecycle::record(deps.jobs.as_ref(), &job_id, SOURCE, event);

    let job = match deps.jobs.get(&job_id).await? {
        Some(job) => job,
        None => return Err(LifecycleError::NotFound(job_id).into()),
    };
    if job.status.is_terminal() {
        tracing::info!(status = %job.status, "job already finished; duplicate ignored");
        return Ok(());
    }
    if job.cancel_requested {
        return ignore_refusal(record(JobEvent::Cancelled).await);
    }
    if let Err(LifecycleError::Refused { error, .. }) = record(JobEvent::Started { phase: "reading".into() }).await.map(drop) {
        tracing::info!(%error, "not started");
        return Ok(());
    }
    let bytes = match deps.blobs.read_all(&input.uri, deps.config.max_bytes).await {
        Ok(b) => b,
        Err(BlobError::TooLarge { size, limit, .. }) => {
            let failure = JobFailure::new("too_large", format!("text of {size} bytes is over the limit of {limit}"));
            return ignore_refusal(record(JobEvent::Failed(failure)).await);
        }
        Err(BlobError::NotFound(uri)) => {
            let failure = JobFailure::new("input_missing", format!("the upload {uri} no longer exists"));
            return ignore_refusal(record(JobEvent::Failed(failure)).await);
        }
        Err(e) => return Err(e.into()),
    };
    record(JobEvent::Progress { phase: "analysing".into(), progress: 50, eta_s: None }).await.map(drop).or_else(refusal_is_ok)?;
    let result = analyse(&bytes);
    tracing::info!(words = result.words, lines = result.lines, encoding = ?result.encoding, "analysed");
    ignore_refusal(record(JobEvent::Completed { result: JobResult::Text(result) }).await)
}

/// A refused transition means the job moved on (cancelled, failed elsewhere): not an error here.
fn refusal_is_ok(e: LifecycleError) -> Result<(), TextError> {
    match e {
        LifecycleError::Refused { error, .. } => {
            tracing::info!(%error, "job moved on");
            Ok(())
        }
        e => Err(e.into()),
    }
}

fn ignore_refusal<T>(r: Result<T, LifecycleError>) -> Result<(), TextError> {
    r.map(drop).or_else(refusal_is_ok)
}

/// Decodes and counts. Never fails: bytes that are neither UTF-8 nor
/// BOM-marked UTF-16 are read as Latin-1, which maps every byte to a character.
pub fn analyse(bytes: &[u8]) -> TextResult {
    let mut result = TextResult { schema_version: TextResult::SCHEMA_VERSION, bytes: bytes.len() as u64, ..TextResult::default() };
    let counts = if let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
        result.bom = true;
        result.encoding = TextEncoding::Utf8;
        count(String::from_utf8_lossy(rest).chars())
    } else if let Some(rest) = bytes.strip_prefix(b"\xFF\xFE") {
        result.bom = true;
        result.encoding = TextEncoding::Utf16le;
        count(utf16(rest, u16::from_le_bytes))
    } else if let Some(rest) = bytes.strip_prefix(b"\xFE\xFF") {
        result.bom = true;
        result.encoding = TextEncoding::Utf16be;
        count(utf16(rest, u16::from_be_bytes))
    } else if let Ok(text) = std::str::from_utf8(bytes) {
        result.encoding = TextEncoding::Utf8;
        count(text.chars())
    } else {
        result.encoding = TextEncoding::Latin1;
        count(bytes.iter().map(|&b| char::from(b)))
    };
    (result.chars, result.lines, result.words) = counts;
    result
}

fn utf16(bytes: &[u8], unit: fn([u8; 2]) -> u16) -> impl Iterator<Item = char> + '_ {
    let units = bytes.chunks_exact(2).map(move |pair| unit([pair[0], pair[1]]));
    char::decode_utf16(units).map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
}

/// `(chars, lines, words)` in one pass without allocating.
fn count(chars: impl Iterator<Item = char>) -> (u64, u64, u64) {
    let (mut n, mut newlines, mut words) = (0u64, 0u64, 0u64);
    let (mut in_word, mut last) = (false, '\n');
    for c in chars {
        n += 1;
        if c == '\n' {
            newlines += 1;
        }
        let space = c.is_whitespace();
        if !space && !in_word {
            words += 1;
        }
        in_word = !space;
        last = c;
    }
    let unterminated = u64::from(n > 0 && last != '\n');
    (n, newlines + unterminated, words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_supported_encoding() {
        let r = analyse(b"\xEF\xBB\xBFone two\n");
        assert_eq!((r.encoding, r.bom, r.words, r.lines, r.chars), (TextEncoding::Utf8, true, 2, 1, 8));
        let mut be = vec![0xFE, 0xFF];
        be.extend("a b c".encode_utf16().flat_map(u16::to_be_bytes));
        let r = analyse(&be);
        assert_eq!((r.encoding, r.words, r.chars), (TextEncoding::Utf16be, 3, 5));
        let r = analyse(b"na\xefve caf\xe9");
        assert_eq!((r.encoding, r.words, r.chars), (TextEncoding::Latin1, 2, 10));
    }

    #[test]
    fn counts_lines_like_people_do() {
        assert_eq!(analyse(b"").lines, 0);
        assert_eq!(analyse(b"a").lines, 1);
        assert_eq!(analyse(b"a\n").lines, 1);
        assert_eq!(analyse(b"a\n\nb").lines, 3);
        assert_eq!(analyse(b"  spaced\t\tout  words ").words, 3);
    }
}
