//! Reading a PDF with `pdf_oxide`: page count, the information dictionary,
//! each page's text and a preview of the first page.
//!
//! The library is fenced in: every call that walks content (a page's text,
//! the preview) runs under `catch_unwind`, so an odd font or CMap that makes
//! it panic costs that page (reported), never the job or the runtime.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use pdf_oxide::converters::ConversionOptions;
use pdf_oxide::document::PdfDocument;
use pdf_oxide::object::Object;
use pdf_oxide::rendering::{RenderOptions, render_page_fit};
use prism_shared::app::processing::{Progress, WorkError, panic_message};
use prism_shared::domain::results::{DocumentPages, DocumentResult, PageText, Thumbnail};

pub const SCHEMA_VERSION: u32 = 1;
/// The preview's longest edge.
pub const PREVIEW_SIZE: u32 = 800;
/// Keys of the information dictionary that are reported, and their names.
const INFO_KEYS: [(&str, &str); 8] = [
    ("Title", "title"),
    ("Author", "author"),
    ("Subject", "subject"),
    ("Keywords", "keywords"),
    ("Creator", "creator"),
    ("Producer", "producer"),
    ("CreationDate", "created"),
    ("ModDate", "modified"),
];

#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("not a PDF that can be read: {0}")]
    Corrupt(String),
    #[error("{pages} pages is over the limit of {limit}")]
    TooManyPages { pages: usize, limit: usize },
    #[error("reading the document took longer than the deadline allows")]
    Deadline,
    #[error("cancelled")]
    Cancelled,
}

impl WorkError for DocumentError {
    /// A parser panic is a property of this file.
    const PANIC_CODE: &'static str = "corrupt_document";

    fn code(&self) -> &'static str {
        match self {
            Self::Corrupt(_) => "corrupt_document",
            Self::TooManyPages { .. } => "too_many_pages",
            Self::Deadline => "deadline_exceeded",
            Self::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct DocumentLimits {
    pub max_pages: usize,
    /// Pages read at once. Pages are independent, and Lambda's memory sizes
    /// above 1,769 MB bring a second vCPU; `available_parallelism` reads the
    /// CPU quota, so a one-vCPU function reads one page at a time.
    pub workers: usize,
}

impl Default for DocumentLimits {
    fn default() -> Self {
        Self { max_pages: 5_000, workers: std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_WORKERS)) }
    }
}

/// Lambda's largest functions have six vCPUs.
const MAX_WORKERS: usize = 6;

#[derive(Debug, Clone)]
pub struct Analysed {
    pub result: DocumentResult,
    pub pages: DocumentPages,
    /// PNG of the first page, when it could be drawn.
    pub preview: Option<Vec<u8>>,
}

impl Analysed {
    /// All pages' text, separated by form feeds as `pdftotext` does.
    pub fn plain_text(&self) -> String {
        self.pages.pages.iter().map(|p| p.text.as_str()).collect::<Vec<_>>().join("\u{000C}")
    }
}

/// Runs `f`, turning a panic into an error message.
fn fenced<T>(f: impl FnOnce() -> Result<T, pdf_oxide::Error>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(panic) => Err(panic_message(panic.as_ref())),
    }
}

/// Reads the document; `preview` also draws the first page.
pub fn analyse(
    bytes: Vec<u8>,
    limits: &DocumentLimits,
    preview: bool,
    deadline: Instant,
    progress: &Progress,
) -> Result<Analysed, DocumentError> {
    let doc = fenced(|| PdfDocument::from_bytes(bytes)).map_err(DocumentError::Corrupt)?;
    let page_count = fenced(|| doc.page_count()).map_err(DocumentError::Corrupt)?;
    if page_count == 0 {
        return Err(DocumentError::Corrupt("the document has no pages".into()));
    }
    if page_count > limits.max_pages {
        return Err(DocumentError::TooManyPages { pages: page_count, limit: limits.max_pages });
    }
    let (major, minor) = doc.version();
    // Plain reading-order text; `extract_text` also lays tables out as
    // aligned columns, which costs a third more time for the same words.
    let text_options = ConversionOptions::default();
    let mut warnings = Vec::new();
    let texts = read_pages(&doc, page_count, &text_options, limits.workers, deadline, progress)?;
    let mut pages = Vec::with_capacity(page_count);
    let (mut failed, mut empty, mut words, mut chars) = (0u32, 0u32, 0u64, 0u64);
    for (index, text) in texts.into_iter().enumerate() {
        let text = match text {
            PageRead::Text(text) => text,
            PageRead::Unreadable(reason) => {
                failed += 1;
                if warnings.len() < 20 {
                    warnings.push(format!("page {}: the text could not be read: {reason}", index + 1));
                }
                String::new()
            }
        };
        let page_words = text.split_whitespace().count() as u64;
        if page_words == 0 {
            empty += 1;
        }
        words += page_words;
        chars += text.chars().count() as u64;
        pages.push(PageText { page: index as u32 + 1, words: page_words, text });
    }
    if failed as usize == page_count {
        return Err(DocumentError::Corrupt(format!("no page's text could be read ({})", warnings.first().map_or("", String::as_str))));
    }
    if empty > 0 && words == 0 {
        warnings.push("no text was found: the pages may be scanned images".into());
    }
    let options = RenderOptions::default();
    let preview = match preview.then(|| fenced(|| render_page_fit(&doc, 0, PREVIEW_SIZE, PREVIEW_SIZE, &options))) {
        Some(Ok(image)) => Some(image),
        Some(Err(reason)) => {
            warnings.push(format!("the first page could not be drawn: {reason}"));
            None
        }
        None => None,
    };
    let result = DocumentResult {
        schema_version: SCHEMA_VERSION,
        format: format!("pdf-{major}.{minor}"),
        pages: page_count as u32,
        metadata: info(&doc),
        encrypted: doc.is_encrypted(),
        words,
        chars,
        pages_failed: failed,
        pages_without_text: empty,
        preview: preview.as_ref().map(|p| Thumbnail {
            name: "preview".into(),
            width: p.width,
            height: p.height,
            content_type: "image/png".into(),
        }),
        warnings,
    };
    Ok(Analysed { result, pages: DocumentPages { schema_version: SCHEMA_VERSION, pages }, preview: preview.map(|p| p.data) })
}

/// One page's text, or why the library could not read it.
enum PageRead {
    Text(String),
    Unreadable(String),
}

/// Every page's text, in page order, `workers` pages at a time (each
/// worker takes the next unread page). The first deadline or cancellation a
/// worker sees stops them all.
fn read_pages(
    doc: &PdfDocument,
    page_count: usize,
    options: &ConversionOptions,
    workers: usize,
    deadline: Instant,
    progress: &Progress,
) -> Result<Vec<PageRead>, DocumentError> {
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let read = || -> Result<Vec<(usize, PageRead)>, DocumentError> {
        let mut mine = Vec::new();
        loop {
            let index = next.fetch_add(1, Ordering::Relaxed);
            if index >= page_count {
                return Ok(mine);
            }
            let stop = if Instant::now() > deadline {
                Some(DocumentError::Deadline)
            } else if progress.cancelled() {
                Some(DocumentError::Cancelled)
            } else {
                None
            };
            if let Some(error) = stop {
                next.store(page_count, Ordering::Relaxed);
                return Err(error);
            }
            let text = fenced(|| doc.extract_text_with_options(index, options)).map_or_else(PageRead::Unreadable, PageRead::Text);
            mine.push((index, text));
            progress.report_count(done.fetch_add(1, Ordering::Relaxed) as u64 + 1, page_count as u64);
        }
    };
    let mut texts: Vec<PageRead> = Vec::new();
    texts.resize_with(page_count, || PageRead::Text(String::new()));
    let mut outcomes = Vec::new();
    if workers <= 1 {
        outcomes.push(read());
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers.min(page_count)).map(|_| scope.spawn(read)).collect();
            // The library's panics are fenced page by page; one of this code's goes on up.
            outcomes.extend(handles.into_iter().map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))));
        });
    }
    for outcome in outcomes {
        for (index, text) in outcome? {
            texts[index] = text;
        }
    }
    Ok(texts)
}

/// The information dictionary's text entries.
fn info(doc: &PdfDocument) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    let Some(info) = doc.trailer().as_dict().and_then(|t| t.get("Info")).and_then(|i| doc.resolve_object(i).ok()) else {
        return found;
    };
    let Some(dict) = info.as_dict() else { return found };
    for (key, name) in INFO_KEYS {
        let value = dict.get(key).and_then(|v| doc.resolve_object(v).ok());
        if let Some(text) = value.as_ref().and_then(Object::as_string).map(pdf_text_string) {
            let text = text.trim();
            if !text.is_empty() {
                found.insert(name.to_owned(), text.chars().take(1024).collect());
            }
        }
    }
    found
}

/// A PDF text string: UTF-16BE with a byte-order mark, UTF-8 with one (PDF
/// 2.0), otherwise PDFDocEncoding, which agrees with Latin-1 on printable text.
fn pdf_text_string(bytes: &[u8]) -> String {
    if let Some(utf16) = bytes.strip_prefix(&[0xFE, 0xFF]) {
        let units: Vec<u16> = utf16.chunks_exact(2).map(|b| u16::from_be_bytes([b[0], b[1]])).collect();
        return String::from_utf16_lossy(&units);
    }
    if let Some(utf8) = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        return String::from_utf8_lossy(utf8).into_owned();
    }
    bytes.iter().map(|&b| char::from(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_strings_decode_in_each_encoding() {
        assert_eq!(pdf_text_string(b"plain"), "plain");
        assert_eq!(pdf_text_string(&[0xFE, 0xFF, 0x00, 0x48, 0x00, 0xE9]), "Hé");
        assert_eq!(pdf_text_string(&[0xEF, 0xBB, 0xBF, 0x48, 0xC3, 0xA9]), "Hé");
        assert_eq!(pdf_text_string(&[0x48, 0xE9]), "Hé");
    }
}
