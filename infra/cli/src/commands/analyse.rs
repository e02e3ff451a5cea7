//! `prism analyse` and `prism thumbnail`: a file through the processor its
//! content calls for, on this machine, without the cloud: the same code the
//! Lambdas run, for operators checking a file and for the benchmarks (which
//! run this command as a child process to measure its time and memory).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use prism_shared::Modality;
use prism_shared::app::processing::{Progress, WorkError};
use prism_shared::bytes::Bytes;
use prism_shared::content::sniff::{self, SNIFF_BYTES};
use prism_shared::domain::results::JobResult;
use serde_json::{Value, json};

#[derive(Debug, clap::Args)]
pub struct AnalyseArgs {
    files: Vec<PathBuf>,
    /// Also write each file's outputs to this folder.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Skip the first-page preview of PDFs (text only, as pdftotext).
    #[arg(long)]
    no_preview: bool,
}

#[derive(Debug, clap::Args)]
pub struct ThumbnailArgs {
    files: Vec<PathBuf>,
    /// Longest edge in pixels.
    #[arg(long, default_value_t = 256)]
    size: u32,
    /// Folder to write them to.
    #[arg(long)]
    out: PathBuf,
}

pub fn analyse(args: &AnalyseArgs) -> anyhow::Result<()> {
    let mut failed = false;
    for file in &args.files {
        let line = report(file, args.out.as_deref(), !args.no_preview)?;
        failed |= line.get("error").is_some();
        println!("{line}");
    }
    if failed {
        std::process::exit(2);
    }
    Ok(())
}

pub fn thumbnail(args: &ThumbnailArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)?;
    let limits = process_image::analysis::ImageLimits::default();
    for file in &args.files {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let thumb = process_image::analysis::thumbnail(&bytes, &limits, args.size).with_context(|| file.display().to_string())?;
        let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let ext = thumb.file.rsplit('.').next().unwrap_or("jpg");
        std::fs::write(args.out.join(format!("{stem}.{ext}")), &thumb.bytes)?;
    }
    Ok(())
}

/// How long one file may take.
const DEADLINE: Duration = Duration::from_secs(600);

/// Why a file gave no result: the job failure code it would carry, and why.
#[derive(Debug)]
pub struct Failure {
    pub code: String,
    pub message: String,
}

impl Failure {
    fn new(code: &str, message: impl ToString) -> Self {
        Self { code: code.to_owned(), message: message.to_string() }
    }
}

/// An output a processor made, named as in the cloud.
#[derive(Debug)]
pub struct LocalOutput {
    pub file: String,
    pub bytes: Vec<u8>,
}

/// Classifies `path` by its bytes and runs the matching processor;
/// `preview: false` skips drawing a PDF's first page (to time text alone).
pub fn file(path: &Path, preview: bool) -> Result<(Modality, JobResult, Vec<LocalOutput>), Failure> {
    let bytes = std::fs::read(path).map_err(|e| Failure::new("unreadable", e))?;
    let head = &bytes[..bytes.len().min(SNIFF_BYTES)];
    let sniffed = sniff::sniff(head, bytes.len() as u64).map_err(|e| Failure::new(e.code(), e))?;
    let deadline = Instant::now() + DEADLINE;
    let progress = Progress::detached();
    let (result, outputs) = match sniffed.modality {
        Modality::Audio => {
            let a = process_audio::analysis::analyse(Bytes::from(bytes), sniffed.mime, deadline, &progress)
                .map_err(|e| Failure::new(e.code(), e))?;
            let waveform = serde_json::to_vec(&a.waveform).map_err(|e| Failure::new("encoding", e))?;
            (JobResult::Audio(Box::new(a.result)), vec![LocalOutput { file: "waveform.json".into(), bytes: waveform }])
        }
        Modality::Video => {
            let scratch = tempfile::tempdir().map_err(|e| Failure::new("scratch", e))?;
            let a = process_video::media::analyse(path, scratch.path(), deadline, &progress).map_err(|e| Failure::new(e.code(), e))?;
            let outputs = a.outputs.into_iter().map(|o| LocalOutput { file: o.file, bytes: o.bytes }).collect();
            (JobResult::Video(Box::new(a.result)), outputs)
        }
        Modality::Document => {
            let limits = process_document::pdf::DocumentLimits::default();
            // As the function does on Lambda, when told to (see process_document::fonts).
            if let Some(dir) = process_document::fonts::fallback_dir_from_env().map_err(|e| Failure::new("config", e))? {
                process_document::fonts::install(&dir).map_err(|e| Failure::new("fonts", e))?;
            }
            let a = process_document::pdf::analyse(bytes, &limits, preview, deadline, &progress).map_err(|e| Failure::new(e.code(), e))?;
            let mut outputs = vec![LocalOutput { file: "text.txt".into(), bytes: a.plain_text().into_bytes() }];
            outputs.extend(a.preview.map(|png| LocalOutput { file: "preview.png".into(), bytes: png }));
            (JobResult::Document(Box::new(a.result)), outputs)
        }
        Modality::Image => {
            let limits = process_image::analysis::ImageLimits::default();
            process_image::analysis::check_header(&bytes, &limits).map_err(|e| Failure::new(e.code(), e))?;
            let a = process_image::analysis::analyse(
                &bytes,
                &limits,
                &process_image::THUMBNAIL_SIZES,
                process_image::analysis::Parts::All,
                &progress,
            )
            .map_err(|e| Failure::new(e.code(), e))?;
            let outputs = a.thumbnails.into_iter().map(|t| LocalOutput { file: t.file, bytes: t.bytes }).collect();
            (JobResult::Image(Box::new(a.result)), outputs)
        }
        Modality::Text => return Err(Failure::new("not_analysed", "text is analysed by the cloud's process-text only")),
    };
    Ok((sniffed.modality, result, outputs))
}

/// One line of `prism analyse --json`; outputs go under `out/{file stem}/` when given.
pub fn report(path: &Path, out: Option<&Path>, preview: bool) -> anyhow::Result<Value> {
    let started = Instant::now();
    let outcome = file(path, preview);
    let seconds = started.elapsed().as_secs_f64();
    Ok(match outcome {
        Ok((modality, result, outputs)) => {
            if let Some(out) = out {
                let dir = out.join(path.file_stem().unwrap_or_default());
                std::fs::create_dir_all(&dir)?;
                for o in outputs {
                    std::fs::write(dir.join(&o.file), o.bytes)?;
                }
            }
            json!({ "file": path, "modality": modality, "seconds": seconds, "result": result })
        }
        Err(f) => json!({ "file": path, "seconds": seconds, "error": { "code": f.code, "message": f.message } }),
    })
}
