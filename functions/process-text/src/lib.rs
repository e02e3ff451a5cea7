//! process-text: decodes a text upload (UTF-8, UTF-16 with a BOM, otherwise
//! Latin-1) and counts bytes, characters, lines and words.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use prism_shared::app::processing::{self, ProcessCommand, Run};
use prism_shared::app::sqs_batch::HandlerError;
use prism_shared::bytes::Bytes;
use prism_shared::content::text::{analyse, describe, to_utf8};
use prism_shared::domain::breakers::Dependency;
use prism_shared::domain::joblog::LogLevel;
use prism_shared::domain::results::JobResult;
use prism_shared::{ConfigError, runtime::config};

pub const SOURCE: &str = "process-text";
/// What this processor's work needs beyond the job table, each behind its circuit breaker.
pub const USES: [Dependency; 1] = [Dependency::S3];

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

pub type Deps = prism_shared::ports::Deps<Config>;

/// Of a batch, the texts that add up to this share of the largest text
/// accepted are analysed at once: memory is sized for one text at the limit
/// (64 MiB in 512 MB), and analysis holds a few copies of its input, so an
/// eighth of the limit in all leaves room; a larger text runs alone.
const SHARE_OF_THE_LIMIT_AT_ONCE: u64 = 8;

pub async fn handle(deps: &Deps, event: SqsEvent) -> SqsBatchResponse {
    let bytes_at_once = deps.config.max_bytes / SHARE_OF_THE_LIMIT_AT_ONCE;
    processing::process_commands_within(deps, event, SOURCE, "reading", &USES, Some(bytes_at_once), async |run, command| {
        process(deps, run, command).await
    })
    .await
}

async fn process(deps: &Deps, run: &Run<'_>, command: &ProcessCommand) -> Result<(), HandlerError> {
    let (input, mime) = (&command.input, &command.mime);
    let Some(bytes) = run.read_input(command, deps.config.max_bytes, "text").await? else { return Ok(()) };
    if !run.checkpoint("analysing", 40, None).await? {
        return Ok(());
    }
    let text = to_utf8(&bytes);
    let mut result = analyse(&bytes);
    describe(&text, mime, &mut result);
    run.log(
        LogLevel::Info,
        format!("analysed {} words on {} lines", result.words, result.lines),
        &[("encoding", format!("{:?}", result.encoding).into()), ("bytes", bytes.len().into())],
    );
    // A cancel requested meanwhile stops the job before it writes anything.
    if !run.checkpoint("writing outputs", 80, None).await? {
        return Ok(());
    }
    let output = run.write_output(input, "text", "text.txt", "text/plain; charset=utf-8", Bytes::from(text)).await?;
    run.complete(JobResult::Text(result), vec![output]).await
}
