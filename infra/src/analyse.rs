//! `prism analyse`: a file through the processor its content calls for, on
//! this machine, without the cloud: the same code the Lambdas run, for
//! operators checking a file and for the benchmarks.

use std::path::Path;
use std::time::{Duration, Instant};

use prism_shared::Modality;
use prism_shared::bytes::Bytes;
use prism_shared::processing::Progress;
use prism_shared::results::JobResult;
use prism_shared::sniff::{self, SNIFF_BYTES};
use serde_json::{Value, json};

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
            let a = process_image::analysis::analyse(&bytes, &limits, &process_image::THUMBNAIL_SIZES)
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
