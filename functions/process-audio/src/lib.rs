//! process-audio: codec, sample rate, channels, duration, bitrate and tags;
//! peak, RMS and EBU R128 integrated loudness; a ~1,000-bucket waveform for
//! drawing (output `waveform`, JSON) and the silent stretches. Decoding is
//! streamed through the meters, bounded by a deadline and cancellable.

pub mod analysis;
pub mod loudness;
pub mod opus;

use std::time::{Duration, Instant};

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use prism_shared::app::processing::{self, ProcessCommand, Run};
use prism_shared::app::sqs_batch::HandlerError;
use prism_shared::bytes::Bytes;
use prism_shared::domain::breakers::Dependency;
use prism_shared::domain::joblog::LogLevel;
use prism_shared::domain::results::JobResult;
use prism_shared::{ConfigError, runtime::config};

use crate::analysis::analyse;

pub const SOURCE: &str = "process-audio";
/// What this processor's work needs beyond the job table, each behind its circuit breaker.
pub const USES: [Dependency; 2] = [Dependency::S3, Dependency::Ffmpeg];

#[derive(Debug, Clone)]
pub struct Config {
    pub max_bytes: u64,
    /// How long decoding may take before the job fails (the function's
    /// timeout minus time to write the results).
    pub deadline: Duration,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            max_bytes: config::parsed_or("AUDIO_MAX_BYTES", 500 * 1024 * 1024)?,
            deadline: Duration::from_secs(config::parsed_or("AUDIO_DEADLINE_SECONDS", 240)?),
        })
    }
}

pub type Deps = prism_shared::ports::Deps<Config>;

pub async fn handle(deps: &Deps, event: SqsEvent) -> SqsBatchResponse {
    processing::process_commands(deps, event, SOURCE, "reading", &USES, async |run, command| process(deps, run, command).await).await
}

async fn process(deps: &Deps, run: &Run<'_>, command: &ProcessCommand) -> Result<(), HandlerError> {
    let input = &command.input;
    let deadline = Instant::now() + deps.config.deadline;
    let Some(bytes) = run.read_input(command, deps.config.max_bytes, "audio").await? else { return Ok(()) };
    let mime = command.mime.clone();
    let work = move |progress: &_| analyse(bytes, &mime, deadline, progress);
    let Some(analysed) = run.blocking("decoding", (10, 90), Duration::from_secs(1), work).await? else { return Ok(()) };
    let result = analysed.result;
    run.log(
        LogLevel::Info,
        format!("decoded {:.1} s of {}", result.duration_s, result.codec),
        &[("codec", result.codec.to_string().into()), ("duration_s", result.duration_s.into())],
    );
    if !run.checkpoint("writing waveform", 90, None).await? {
        return Ok(());
    }
    let waveform = serde_json::to_vec(&analysed.waveform)?;
    let output = run.write_output(input, "waveform", "waveform.json", "application/json", Bytes::from(waveform)).await?;
    run.complete(JobResult::Audio(Box::new(result)), vec![output]).await
}
