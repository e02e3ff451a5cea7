//! process-video: container, codecs, dimensions, frame rate, duration and
//! audio; a poster frame and a contact sheet of keyframes (each found by
//! seeking before the input, so the file is never decoded end to end); the
//! audio track extracted for process-audio. ffmpeg does the decoding, always
//! under the job's deadline.

pub mod media;

use std::time::{Duration, Instant};

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use prism_shared::app::processing::{self, ProcessCommand, Run};
use prism_shared::app::sqs_batch::HandlerError;
use prism_shared::bytes::Bytes;
use prism_shared::domain::breakers::Dependency;
use prism_shared::domain::joblog::LogLevel;
use prism_shared::domain::results::JobResult;
use prism_shared::{BlobError, ConfigError, runtime::config};

use crate::media::analyse;

pub const SOURCE: &str = "process-video";
/// What this processor's work needs beyond the job table, each behind its circuit breaker.
pub const USES: [Dependency; 2] = [Dependency::S3, Dependency::Ffmpeg];

#[derive(Debug, Clone)]
pub struct Config {
    pub max_bytes: u64,
    /// How long ffmpeg may run in all before the job fails; each ffmpeg
    /// process is killed when it passes.
    pub deadline: Duration,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            max_bytes: config::parsed_or("VIDEO_MAX_BYTES", 2 * 1024 * 1024 * 1024)?,
            deadline: Duration::from_secs(config::parsed_or("VIDEO_DEADLINE_SECONDS", 600)?),
        })
    }
}

pub type Deps = prism_shared::ports::Deps<Config>;

pub async fn handle(deps: &Deps, event: SqsEvent) -> SqsBatchResponse {
    processing::process_commands(deps, event, SOURCE, "downloading", &USES, async |run, command| process(deps, run, command).await).await
}

async fn process(deps: &Deps, run: &Run<'_>, command: &ProcessCommand) -> Result<(), HandlerError> {
    let input = &command.input;
    let deadline = Instant::now() + deps.config.deadline;
    // ffmpeg seeks, so it reads a file; the directory goes when the job ends.
    let scratch = tempfile::tempdir().map_err(|e| BlobError::Unavailable(Box::new(e)))?;
    let path = scratch.path().join("input");
    if !run.download_input(input, &path, deps.config.max_bytes, "video").await? {
        return Ok(());
    }
    let dir = scratch.path().to_owned();
    let work = move |progress: &_| analyse(&path, &dir, deadline, progress);
    let Some(analysed) = run.blocking("thumbnails", (10, 85), Duration::from_secs(1), work).await? else { return Ok(()) };
    let result = analysed.result;
    run.log(
        LogLevel::Info,
        format!("{} {}×{}, {:.1} s", result.video_codec, result.width, result.height, result.duration_s),
        &[("codec", result.video_codec.to_string().into()), ("duration_s", result.duration_s.into())],
    );
    if !run.checkpoint("writing outputs", 90, None).await? {
        return Ok(());
    }
    let mut outputs = Vec::with_capacity(analysed.outputs.len());
    for out in analysed.outputs {
        outputs.push(run.write_output(input, out.name, &out.file, out.content_type, Bytes::from(out.bytes)).await?);
    }
    run.complete(JobResult::Video(Box::new(result)), outputs).await
}
