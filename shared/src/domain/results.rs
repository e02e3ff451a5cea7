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
    Audio(Box<AudioResult>),
    Video(Box<VideoResult>),
    Document(Box<DocumentResult>),
    /// A workflow's `combine` step (and the run's root job).
    Workflow(Box<crate::domain::workflow::WorkflowResult>),
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
    /// Dominant colours, most common first, with the share of pixels each
    /// stands for; empty from a workflow step that only made thumbnails.
    pub palette: Vec<PaletteColor>,
    /// 64-bit difference hash (dHash) as 16 hex digits; a Hamming distance of
    /// up to ~10 bits between two hashes means near-duplicate images. `null`
    /// from a workflow step that only made thumbnails.
    pub perceptual_hash: Option<String>,
    /// Empty from a workflow step that only found the palette and hash.
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

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Thumbnail {
    /// The output it was written as (`thumbnail_256`, `thumbnail_1024`).
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub content_type: String,
}

/// What `process-audio` reports (schema_version 1).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AudioResult {
    pub schema_version: u32,
    /// The codec's short name: `mp3`, `aac`, `flac`, `vorbis`, `opus`, `pcm_s16le`, …
    pub codec: String,
    /// What decoded it: `symphonia`; `opus-pure` for Ogg Opus, which symphonia
    /// lacks; `ffmpeg` for Opus in other containers or in surround.
    pub decoder: String,
    pub sample_rate: u32,
    pub channels: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bits_per_sample: Option<u32>,
    /// Of the audio actually decoded.
    pub duration_s: f64,
    /// What the container promised, when it differs from what was decoded by
    /// more than 1% (a truncated file or a lying header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared_duration_s: Option<f64>,
    /// Average: the file's bits over its duration.
    pub bitrate_bps: u64,
    /// Title, artist, album, … by their common names; other keys as the file spells them.
    pub tags: std::collections::BTreeMap<String, String>,
    pub levels: AudioLevels,
    /// Stretches quieter than `threshold_dbfs` for at least `min_duration_s`.
    pub silence: SilenceReport,
    /// Output `waveform` (JSON, see [`Waveform`]).
    pub waveform_buckets: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Levels over the whole file; `None` for digital silence (minus infinity).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AudioLevels {
    /// Highest absolute sample value, in dB relative to full scale.
    pub peak_dbfs: Option<f64>,
    /// Root mean square over all channels and samples.
    pub rms_dbfs: Option<f64>,
    /// EBU R128 / ITU-R BS.1770 integrated loudness (gated).
    pub integrated_lufs: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SilenceReport {
    pub threshold_dbfs: f64,
    pub min_duration_s: f64,
    pub spans: Vec<TimeSpan>,
    /// Sum of the spans.
    pub total_s: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct TimeSpan {
    pub start_s: f64,
    pub end_s: f64,
}

/// The `waveform` output of an audio job: peak levels in equal slices of
/// time, for drawing (schema_version 1).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Waveform {
    pub schema_version: u32,
    pub duration_s: f64,
    /// Seconds each bucket covers.
    pub bucket_s: f64,
    /// Highest absolute sample in each bucket, 0–1, over all channels.
    pub peaks: Vec<f32>,
}

/// What `process-video` reports (schema_version 1).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct VideoResult {
    pub schema_version: u32,
    /// ffmpeg's demuxer names, e.g. `mov,mp4,m4a,3gp,3g2,mj2` or `matroska,webm`.
    pub container: String,
    pub duration_s: f64,
    pub video_codec: String,
    pub width: u32,
    pub height: u32,
    pub frame_rate: f64,
    pub pixel_format: String,
    pub has_audio: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<VideoAudioTrack>,
    /// Output `poster` (JPEG).
    pub poster: Thumbnail,
    /// Output `contact_sheet` (JPEG): `columns` × `rows` keyframe thumbnails,
    /// taken at `timestamps_s`.
    pub contact_sheet: ContactSheet,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct VideoAudioTrack {
    pub codec: String,
    pub sample_rate: u32,
    /// As ffmpeg names the layout: `mono`, `stereo`, `5.1`, …
    pub channels: String,
    /// The track extracted losslessly (FLAC) as output `audio`, ready for `process-audio`.
    pub extracted: bool,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ContactSheet {
    pub columns: u32,
    pub rows: u32,
    pub tile_width: u32,
    pub tile_height: u32,
    pub timestamps_s: Vec<f64>,
}

/// What `process-document` reports (schema_version 1).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DocumentResult {
    pub schema_version: u32,
    /// `pdf-1.7`, …
    pub format: String,
    pub pages: u32,
    /// From the document information dictionary.
    pub metadata: std::collections::BTreeMap<String, String>,
    pub encrypted: bool,
    /// Runs of non-whitespace characters over all pages.
    pub words: u64,
    pub chars: u64,
    /// Pages whose text could not be read (listed in `warnings`); their text is empty.
    pub pages_failed: u32,
    /// Pages with no text at all (scans, images).
    pub pages_without_text: u32,
    /// Output `preview` (PNG), the first page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<Thumbnail>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The `pages` output of a document job: each page's text (schema_version 1).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DocumentPages {
    pub schema_version: u32,
    pub pages: Vec<PageText>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PageText {
    /// 1-based.
    pub page: u32,
    pub words: u64,
    pub text: String,
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

/// A video's keyframes beside its soundtrack's silences and loudness.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Timeline {
    pub duration_s: f64,
    pub keyframes: Vec<TimelineKeyframe>,
    /// The audio step's silent stretches, as it reported them.
    pub silence: Vec<TimeSpan>,
    pub integrated_lufs: Option<f64>,
    pub peak_dbfs: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct TimelineKeyframe {
    pub at_s: f64,
    /// Whether the soundtrack is silent at that moment.
    pub silent: bool,
}

/// A document's shape and what its text says.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DocumentSummary {
    pub pages: u32,
    pub words: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keywords: Vec<Keyword>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reading_time_s: Option<f64>,
}

/// An image at a glance.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ImageSummary {
    pub width: u32,
    pub height: u32,
    pub dominant_color: Option<String>,
    pub perceptual_hash: Option<String>,
    pub thumbnails: u32,
}
