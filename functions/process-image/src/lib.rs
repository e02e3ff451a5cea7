//! process-image: format, dimensions, EXIF, thumbnails (256 and 1024 px on
//! the longest edge, orientation applied, no metadata copied), a dominant
//! colour palette and a perceptual hash; a workflow step may ask for the
//! thumbnails or the palette and hash alone. Pixel counts are checked from the
//! header before decoding, so a 60,000 × 60,000 PNG is refused without
//! allocating it; the decoder itself runs under a memory limit.

pub mod analysis;
pub mod shrink;
pub mod webp;

use std::time::Duration;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use prism_shared::app::budget::Budget;
use prism_shared::app::processing::{self, ProcessCommand, Run, WorkError};
use prism_shared::app::sqs_batch::HandlerError;
use prism_shared::bytes::Bytes;
use prism_shared::domain::breakers::Dependency;
use prism_shared::domain::job::JobFailure;
use prism_shared::domain::joblog::LogLevel;
use prism_shared::domain::results::JobResult;
use prism_shared::{ConfigError, runtime::config};

use crate::analysis::{ImageLimits, Parts, analyse, check_header};

pub const SOURCE: &str = "process-image";
/// What this processor's work needs beyond the job table, each behind its circuit breaker.
pub const USES: [Dependency; 1] = [Dependency::S3];
/// Longest edges of the thumbnails, largest first.
pub const THUMBNAIL_SIZES: [u32; 2] = [1024, 256];

#[derive(Debug, Clone)]
pub struct Config {
    pub max_bytes: u64,
    pub limits: ImageLimits,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let defaults = ImageLimits::default();
        Ok(Self {
            max_bytes: config::parsed_or("IMAGE_MAX_BYTES", 100 * 1024 * 1024)?,
            limits: ImageLimits {
                max_pixels: config::parsed_or("IMAGE_MAX_PIXELS", defaults.max_pixels)?,
                max_alloc: config::parsed_or("IMAGE_MAX_ALLOC_BYTES", defaults.max_alloc)?,
            },
        })
    }
}

pub type Deps = prism_shared::ports::Deps<Config>;

/// A batch's images are processed together, most of their time being waits
/// on S3 and the table. The function's `MemorySize` is sized for one image
/// at the limits, so the inputs held at once stay within one input's limit
/// and the pictures being decoded within one picture's pixels: many small
/// images go together, one at the limits goes alone.
pub async fn handle(deps: &Deps, event: SqsEvent) -> SqsBatchResponse {
    let decoding = Budget::new(deps.config.limits.max_pixels);
    let inputs_at_once = Some(deps.config.max_bytes);
    processing::process_commands_within(deps, event, SOURCE, "reading", &USES, inputs_at_once, async |run, command| {
        process(deps, &decoding, run, command).await
    })
    .await
}

async fn process(deps: &Deps, decoding: &Budget, run: &Run<'_>, command: &ProcessCommand) -> Result<(), HandlerError> {
    let input = &command.input;
    let Some(bytes) = run.read_input(command, deps.config.max_bytes, "image").await? else { return Ok(()) };
    let (width, height) = match check_header(&bytes, &deps.config.limits) {
        Ok((_, width, height)) => (width, height),
        Err(e) => return run.fail(JobFailure::new(e.code(), e.to_string())).await,
    };
    if !run.checkpoint("decoding", 20, None).await? {
        return Ok(());
    }
    let (limits, parts) = (deps.config.limits, Parts::for_action(command.action));
    let work = move |progress: &_| analyse(&bytes, &limits, &THUMBNAIL_SIZES, parts, progress);
    let pixels = decoding.take(u64::from(width) * u64::from(height)).await;
    let analysed = run.blocking("decoding", (20, 80), Duration::from_secs(1), work).await?;
    drop(pixels);
    let Some(analysed) = analysed else { return Ok(()) };
    let result = &analysed.result;
    run.log(
        LogLevel::Info,
        format!("decoded a {}×{} {}", result.width, result.height, result.format),
        &[("format", result.format.to_string().into()), ("width", result.width.into()), ("height", result.height.into())],
    );
    if !run.checkpoint("writing thumbnails", 80, None).await? {
        return Ok(());
    }
    let mut outputs = Vec::with_capacity(analysed.thumbnails.len());
    for thumb in analysed.thumbnails {
        outputs.push(run.write_output(input, &thumb.meta.name, &thumb.file, &thumb.meta.content_type, Bytes::from(thumb.bytes)).await?);
    }
    run.complete(JobResult::Image(Box::new(analysed.result)), outputs).await
}
