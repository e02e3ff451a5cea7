//! Typed, versioned results that processors store on a job.
//!
//! Each result carries `schema_version` so a client can tell which fields to
//! expect; additive changes keep the version, breaking ones bump it.

use serde::{Deserialize, Serialize};

/// A job's result, tagged by the processor that produced it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobResult {
    Text(TextResult),
    Image(Box<ImageResult>),
}

/// What `process-image` reports (schema_version 1).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ImageResult {
    pub schema_version: u32,
    /// The decoder that read it: `jpeg`, `png`, `gif`, `webp`, `bmp`, `tiff`.
    pub format: String,
    /// As stored.
    pub width: u32,
    pub height: u32,
    /// As shown, after the EXIF orientation is applied (what the thumbnails use).
    pub display_width: u32,
    pub display_height: u32,
    /// The decoder's colour type: `rgb8`, `rgba8`, `l8`, `rgb16`, …
    pub color_type: String,
    pub has_alpha: bool,
    /// More than one frame (GIF, WebP); only the first is processed.
    pub animated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exif: Option<ExifSummary>,
    /// Dominant colours, most common first, with the share of pixels each stands for.
    pub palette: Vec<PaletteColor>,
    /// 64-bit difference hash (dHash) as 16 hex digits; a Hamming distance of
    /// up to ~10 bits between two hashes means near-duplicate images.
    pub perceptual_hash: String,
    pub thumbnails: Vec<Thumbnail>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The EXIF fields worth showing. Location is only reported as present:
/// it is never copied into outputs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ExifSummary {
    /// 1–8 as in EXIF; 1 is upright.
    pub orientation: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub make: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software: Option<String>,
    pub has_gps: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaletteColor {
    /// `#rrggbb`.
    pub hex: String,
    /// Fraction of the pixels, 0–1.
    pub share: f32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thumbnail {
    /// The output it was written as (`thumbnail_256`, `thumbnail_1024`).
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub content_type: String,
}

/// How a text's bytes were decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TextEncoding {
    #[default]
    Utf8,
    Utf16le,
    Utf16be,
    /// Bytes that are not valid UTF-8 and carry no BOM: read as ISO-8859-1,
    /// which maps every byte to a character and so never fails.
    Latin1,
}

/// What `process-text` reports.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TextResult {
    pub schema_version: u32,
    pub encoding: TextEncoding,
    /// Whether the text started with a byte-order mark.
    pub bom: bool,
    pub bytes: u64,
    /// Unicode scalar values, after decoding.
    pub chars: u64,
    /// Line count: newline-terminated lines plus a final unterminated one.
    pub lines: u64,
    /// Runs of non-whitespace characters.
    pub words: u64,
    /// Sentences: runs ended by `.`, `!` or `?` before whitespace, or by the end.
    #[serde(default)]
    pub sentences: u64,
    /// At 238 words a minute, the average adult's silent reading speed.
    #[serde(default)]
    pub reading_time_s: f64,
    /// ISO 639-1 code from stop-word frequencies (en, de, fr, es, it, pt, nl), or `und`.
    #[serde(default)]
    pub language: String,
    /// The most frequent words of three letters or more that are not stop words.
    #[serde(default)]
    pub keywords: Vec<Keyword>,
    /// What the classifier's sub-kind implies: JSON validity, CSV shape, Markdown outline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub structure: Option<TextStructure>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keyword {
    pub word: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TextStructure {
    Json {
        valid: bool,
        /// `object`, `array`, `string`, `number`, `boolean` or `null`.
        top_level: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    Csv {
        rows: u64,
        columns: u64,
        /// Whether every row has as many fields as the first.
        consistent: bool,
    },
    Markdown {
        headings: Vec<Heading>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heading {
    pub level: u8,
    pub text: String,
}

impl TextResult {
    pub const SCHEMA_VERSION: u32 = 1;
}
