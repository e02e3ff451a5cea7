//! process-document on real PDFs: manual pages typeset by groff, checked
//! against poppler's `pdfinfo` and `pdftotext`, and damaged copies of them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use prism_shared::app::processing::{Progress, WorkError};
use process_document::pdf::{DocumentLimits, analyse};

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

/// Typesets the manual page of `command` (section 1) as a PDF.
fn manual_pdf(dir: &Path, command: &str) -> PathBuf {
    let source = std::fs::read_dir("/usr/share/man/man1")
        .expect("manual pages")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&format!("{command}.1"))))
        .unwrap_or_else(|| panic!("no manual page for {command}"));
    let out = dir.join(format!("{command}.pdf"));
    let script = format!("zcat -f '{}' | groff -Tpdf -man -P-pa4 > '{}'", source.display(), out.display());
    assert!(Command::new("sh").args(["-c", &script]).status().expect("groff runs").success());
    out
}

fn poppler(tool: &str, path: &Path) -> String {
    let out = Command::new(tool).arg(path).args(if tool == "pdftotext" { &["-"][..] } else { &[][..] }).output();
    String::from_utf8_lossy(&out.expect("poppler-utils installed").stdout).into_owned()
}

#[test]
fn pages_words_metadata_and_preview_agree_with_poppler() {
    let dir = tempfile::tempdir().expect("temp dir");
    for command in ["bash", "grep", "ls"] {
        let path = manual_pdf(dir.path(), command);
        let a = analyse(std::fs::read(&path).expect("pdf"), &DocumentLimits::default(), true, soon(), &Progress::detached())
            .unwrap_or_else(|e| panic!("{command}: {e}"));
        let r = &a.result;
        let pdfinfo_pages: u32 = poppler("pdfinfo", &path)
            .lines()
            .find_map(|l| l.strip_prefix("Pages:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("pdfinfo pages");
        assert_eq!(r.pages, pdfinfo_pages, "{command}");
        assert_eq!(a.pages.pages.len() as u32, r.pages);
        let reference = poppler("pdftotext", &path).split_whitespace().count() as f64;
        let ratio = r.words as f64 / reference;
        assert!((0.9..=1.1).contains(&ratio), "{command}: {} words vs pdftotext's {reference}", r.words);
        assert!(r.metadata.get("producer").is_some_and(|p| p.contains("gropdf")), "{command}: {:?}", r.metadata);
        assert!(r.format.starts_with("pdf-1."), "{}", r.format);
        assert_eq!((r.pages_failed, r.encrypted), (0, false));
        assert!(a.plain_text().contains(&command.to_uppercase()), "{command}: the page header is in the text");
        let preview = image::load_from_memory(a.preview.as_deref().expect("a preview")).expect("a valid PNG");
        let meta = r.preview.as_ref().expect("preview described");
        assert_eq!((preview.width(), preview.height()), (meta.width, meta.height));
        assert_eq!(preview.height(), 800, "A4 is taller than wide: the height is the longest edge");
    }
}

#[test]
fn damaged_pdfs_end_in_bounded_time_without_panicking() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bytes = std::fs::read(manual_pdf(dir.path(), "ls")).expect("pdf");
    let started = Instant::now();
    // Every cut of the file: each must give a result or a typed error, never a panic.
    for cut in (1..10).map(|tenth| bytes.len() * tenth / 10) {
        match analyse(bytes[..cut].to_vec(), &DocumentLimits::default(), true, soon(), &Progress::detached()) {
            Ok(a) => assert!(a.result.pages >= 1),
            Err(e) => assert_eq!(e.code(), "corrupt_document", "cut at {cut}: {e}"),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(30));
    let e = analyse(b"%PDF-1.7\nnot really\n%%EOF".to_vec(), &DocumentLimits::default(), true, soon(), &Progress::detached())
        .expect_err("no pages");
    assert_eq!(e.code(), "corrupt_document", "{e}");
}

#[test]
fn pages_read_side_by_side_come_out_as_one_reader_reads_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bytes = std::fs::read(manual_pdf(dir.path(), "bash")).expect("pdf");
    let read = |workers| {
        let limits = DocumentLimits { workers, ..DocumentLimits::default() };
        analyse(bytes.clone(), &limits, false, soon(), &Progress::detached()).expect("read")
    };
    let (one, four) = (read(1), read(4));
    assert!(one.pages.pages.len() > 8, "enough pages for the readers to interleave");
    assert_eq!(four.pages, one.pages, "the same text, page by page, in page order");
    assert_eq!((four.result.words, four.result.chars), (one.result.words, one.result.chars));
    let e =
        analyse(bytes.clone(), &DocumentLimits { workers: 4, ..DocumentLimits::default() }, false, Instant::now(), &Progress::detached())
            .expect_err("past the deadline");
    assert_eq!(e.code(), "deadline_exceeded", "every reader stops at the deadline");
}

#[test]
fn page_and_time_limits_hold() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bytes = std::fs::read(manual_pdf(dir.path(), "bash")).expect("pdf");
    let e = analyse(bytes.clone(), &DocumentLimits { max_pages: 3, ..DocumentLimits::default() }, true, soon(), &Progress::detached())
        .expect_err("too many pages");
    assert_eq!(e.code(), "too_many_pages");
    let e = analyse(bytes, &DocumentLimits::default(), true, Instant::now(), &Progress::detached()).expect_err("past the deadline");
    assert_eq!(e.code(), "deadline_exceeded");
}

#[tokio::test]
async fn the_handler_writes_text_pages_and_preview() {
    use std::sync::Arc;

    use aws_lambda_events::sqs::SqsEvent;
    use prism_shared::JobStatus;
    use prism_shared::domain::results::{DocumentPages, JobResult};
    use prism_shared::ports::JobStore;
    use prism_shared::testing::memory::{MemoryBlobStore, MemoryJobStore};
    use prism_shared::testing::{memory_deps, queued_job, sample_event};
    use process_document::{Config, handle};

    let dir = tempfile::tempdir().expect("temp dir");
    let pdf = std::fs::read(manual_pdf(dir.path(), "grep")).expect("pdf");
    let event: SqsEvent = sample_event("sqs-process-document-command.json");
    let (jobs, blobs) = (Arc::new(MemoryJobStore::default()), Arc::new(MemoryBlobStore::default()));
    let (id, upload) = queued_job(jobs.as_ref(), "0196f0a0-0000-7000-8000-0000000d0c00", "manual.pdf").await;
    blobs.insert(&upload, pdf);
    let deps = memory_deps(
        jobs.clone(),
        blobs.clone(),
        Config {
            max_bytes: 50 * 1024 * 1024,
            limits: DocumentLimits::default(),
            deadline: Duration::from_secs(60),
            fallback_fonts_dir: None,
        },
    );
    assert!(handle(&deps, event).await.batch_item_failures.is_empty());
    let job = jobs.get(&id).await.expect("get").expect("job");
    assert_eq!(job.status, JobStatus::Completed, "{:?}", job.error);
    let Some(JobResult::Document(result)) = &job.result else { panic!("not a document result: {:?}", job.result) };
    let names: Vec<&str> = job.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["text", "pages", "preview"]);
    let pages: DocumentPages = serde_json::from_slice(&blobs.object(&job.outputs[1].uri).expect("pages").0).expect("pages JSON");
    assert_eq!(pages.pages.len() as u32, result.pages);
    assert_eq!(pages.pages.iter().map(|p| p.words).sum::<u64>(), result.words);
    let text = blobs.object(&job.outputs[0].uri).expect("text").0;
    assert_eq!(String::from_utf8_lossy(&text).matches('\u{000C}').count() as u32, result.pages - 1, "pages split by form feeds");
}
