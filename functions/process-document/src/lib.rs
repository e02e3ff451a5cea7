//! process-document: PDFs. Page count, the information dictionary, each
//! page's text (outputs `text`, plain with form feeds between pages, and
//! `pages`, JSON), word and character counts, and a PNG preview of the first
//! page. A page the library cannot read (or panics on) is reported and
//! skipped; a document it cannot open fails the job with the reason.

pub mod fonts;
pub mod pdf;

use std::time::{Duration, Instant};

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use prism_shared::app::processing::{self, ProcessCommand, Run};
use prism_shared::app::sqs_batch::HandlerError;
use prism_shared::bytes::Bytes;
use prism_shared::domain::breakers::Dependency;
use prism_shared::domain::joblog::LogLevel;
use prism_shared::domain::results::JobResult;
use prism_shared::{ConfigError, runtime::config};

use crate::pdf::{DocumentLimits, analyse};

pub const SOURCE: &str = "process-document";
/// What this processor's work needs beyond the job table, each behind its circuit breaker.
pub const USES: [Dependency; 1] = [Dependency::S3];

#[derive(Debug, Clone)]
pub struct Config {
    pub max_bytes: u64,
    pub limits: DocumentLimits,
    pub deadline: Duration,
    /// Where to put fonts for the preview when the OS has none (see [`fonts`]).
    pub fallback_fonts_dir: Option<std::path::PathBuf>,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            max_bytes: config::parsed_or("DOCUMENT_MAX_BYTES", 200 * 1024 * 1024)?,
            limits: DocumentLimits {
                max_pages: config::parsed_or("DOCUMENT_MAX_PAGES", DocumentLimits::default().max_pages)?,
                ..DocumentLimits::default()
            },
            deadline: Duration::from_secs(config::parsed_or("DOCUMENT_DEADLINE_SECONDS", 240)?),
            fallback_fonts_dir: fonts::fallback_dir_from_env()?,
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
    let Some(bytes) = run.read_input(command, deps.config.max_bytes, "document").await? else { return Ok(()) };
    let limits = deps.config.limits;
    let work = move |progress: &_| analyse(bytes.to_vec(), &limits, true, deadline, progress);
    let Some(analysed) = run.blocking("extracting text", (10, 85), Duration::from_secs(1), work).await? else { return Ok(()) };
    let (pages, words) = (analysed.result.pages, analysed.result.words);
    run.log(LogLevel::Info, format!("extracted {words} words from {pages} pages"), &[("pages", pages.into()), ("words", words.into())]);
    if analysed.preview.is_none() {
        run.log(LogLevel::Warn, "no preview: the first page could not be drawn", &[]);
    }
    if !run.checkpoint("writing text", 90, None).await? {
        return Ok(());
    }
    let mut outputs = Vec::with_capacity(3);
    let text = Bytes::from(analysed.plain_text());
    outputs.push(run.write_output(input, "text", "text.txt", "text/plain; charset=utf-8", text).await?);
    let pages = Bytes::from(serde_json::to_vec(&analysed.pages)?);
    outputs.push(run.write_output(input, "pages", "pages.json", "application/json", pages).await?);
    if let Some(png) = analysed.preview {
        outputs.push(run.write_output(input, "preview", "preview.png", "image/png", Bytes::from(png)).await?);
    }
    run.complete(JobResult::Document(Box::new(analysed.result)), outputs).await
}
