//! Decoding and measuring audio. Symphonia demuxes and decodes what it can;
//! Ogg Opus, which it lacks, is decoded by [`crate::opus`], and Opus in other
//! containers or in surround by ffmpeg to raw samples. Either way the
//! samples stream through one [`Meter`]: peak, RMS, EBU R128 integrated
//! loudness, 10 ms blocks for the waveform and the silence spans. Nothing
//! holds the whole decoded signal in memory.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::mpsc;
use std::time::Instant;

use prism_shared::bytes::Bytes;

use crate::loudness::Loudness;
use crate::opus::OggOpus;
use prism_shared::app::processing::{Progress, WorkError};
use prism_shared::content::ffmpeg::{self, FfmpegError};
use prism_shared::domain::breakers::Dependency;
use prism_shared::domain::results::{AudioLevels, AudioResult, SilenceReport, TimeSpan, Waveform};
use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{CODEC_TYPE_NULL, CODEC_TYPE_OPUS, CodecType, DecoderOptions};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::{MetadataOptions, MetadataRevision, StandardTagKey};
use symphonia::core::probe::Hint;

pub const SCHEMA_VERSION: u32 = 1;
/// Buckets in the waveform output: enough for a full-width drawing.
pub const WAVEFORM_BUCKETS: usize = 1000;
/// Quieter than this for [`SILENCE_MIN_S`] counts as silence.
pub const SILENCE_THRESHOLD_DBFS: f64 = -50.0;
pub const SILENCE_MIN_S: f64 = 0.5;
/// Spans beyond this many are counted in the total but not listed.
const MAX_SILENCE_SPANS: usize = 500;
/// The analysis resolution: 10 ms blocks.
const BLOCKS_PER_SECOND: u32 = 100;

#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("not audio this build can read: {0}")]
    Unsupported(String),
    #[error("the audio could not be decoded: {0}")]
    Corrupt(String),
    #[error("decoding took longer than the deadline allows")]
    Deadline,
    #[error("cancelled")]
    Cancelled,
    #[error(transparent)]
    Ffmpeg(FfmpegError),
}

impl WorkError for AudioError {
    /// A decoder panic is a property of this file.
    const PANIC_CODE: &'static str = "corrupt_audio";

    fn code(&self) -> &'static str {
        match self {
            Self::Unsupported(_) => "unsupported_format",
            Self::Corrupt(_) => "corrupt_audio",
            Self::Deadline | Self::Ffmpeg(FfmpegError::Deadline(_)) => "deadline_exceeded",
            Self::Cancelled => "cancelled",
            Self::Ffmpeg(_) => "decoder_failed",
        }
    }

    /// An ffmpeg that will not start is down, not this recording's fault.
    fn unavailable(&self) -> Option<Dependency> {
        matches!(self, Self::Ffmpeg(FfmpegError::Spawn(_))).then_some(Dependency::Ffmpeg)
    }
}

#[derive(Debug, Clone)]
pub struct Analysed {
    pub result: AudioResult,
    pub waveform: Waveform,
}

/// What the container says before any decoding.
#[derive(Debug, Clone)]
struct Stream {
    codec: CodecType,
    sample_rate: u32,
    channels: usize,
    bits_per_sample: Option<u32>,
    declared_frames: Option<u64>,
}

/// Decodes and measures `bytes`; `mime` (from the classifier) only hints the demuxer.
pub fn analyse(bytes: Bytes, mime: &str, deadline: Instant, progress: &Progress) -> Result<Analysed, AudioError> {
    let mut hint = Hint::new();
    hint.mime_type(mime.split(';').next().unwrap_or(mime).trim());
    let source = MediaSourceStream::new(Box::new(Cursor::new(bytes.clone())), Default::default());
    let format_options = FormatOptions { enable_gapless: true, ..Default::default() };
    let probed =
        symphonia::default::get_probe().format(&hint, source, &format_options, &MetadataOptions::default()).map_err(|e| match e {
            SymphoniaError::Unsupported(what) => AudioError::Unsupported(what.to_owned()),
            other => AudioError::Corrupt(other.to_string()),
        })?;
    let mut format = probed.format;
    let mut tags = Tags::default();
    let mut probed_meta = probed.metadata;
    if let Some(revision) = probed_meta.get().as_ref().and_then(|m| m.current()) {
        collect_tags(revision, &mut tags);
    }
    if let Some(revision) = format.metadata().current() {
        collect_tags(revision, &mut tags);
    }
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or_else(|| AudioError::Unsupported("no audio track".into()))?;
    let (track_id, params) = (track.id, &track.codec_params);
    let stream = Stream {
        codec: params.codec,
        sample_rate: params.sample_rate.ok_or_else(|| AudioError::Corrupt("no sample rate".into()))?,
        channels: params.channels.map_or(0, |c| c.count()),
        bits_per_sample: params.bits_per_sample,
        // Symphonia reports an Ogg Opus stream's final granule, which counts the pre-skip too.
        declared_frames: params.n_frames.map(|n| match params.codec {
            CODEC_TYPE_OPUS => n.saturating_sub(u64::from(params.delay.unwrap_or(0))),
            _ => n,
        }),
    };
    if stream.sample_rate == 0 || stream.sample_rate > 768_000 {
        return Err(AudioError::Corrupt(format!("implausible sample rate {}", stream.sample_rate)));
    }
    let codec_name = codec_name(stream.codec);
    let registry = symphonia::default::get_codecs();
    let (meter, decoder_name, mut warnings) = if registry.get_codec(stream.codec).is_some() {
        let (meter, warnings) = decode_with_symphonia(format.as_mut(), track_id, &stream, deadline, progress)?;
        (meter, "symphonia", warnings)
    } else if stream.codec == CODEC_TYPE_OPUS {
        drop(format);
        match OggOpus::open(&bytes) {
            Ok(opus) => {
                let (meter, warnings) = opus.decode(stream.declared_frames, deadline, progress)?;
                (meter, "opus-pure", warnings)
            }
            Err(not_here) => {
                tracing::info!(reason = %not_here, "Opus decoded by ffmpeg");
                (decode_with_ffmpeg(&bytes, &stream, deadline, progress)?, "ffmpeg", Vec::new())
            }
        }
    } else {
        return Err(AudioError::Unsupported(format!("no decoder for {codec_name}")));
    };
    if meter.frames() == 0 {
        return Err(AudioError::Corrupt("no audio could be decoded".into()));
    }
    // What decoding found beats what the container said (MP4 often leaves channels out).
    let channels = meter.channels() as u16;
    let duration_s = meter.frames() as f64 / f64::from(stream.sample_rate);
    let declared_duration_s = stream.declared_frames.map(|n| n as f64 / f64::from(stream.sample_rate));
    let declared_duration_s = declared_duration_s.filter(|d| (d - duration_s).abs() > duration_s * 0.01);
    if let Some(declared) = declared_duration_s {
        warnings.push(format!("the file declares {declared:.2} s but {duration_s:.2} s of audio could be decoded"));
    }
    let measured = meter.finish();
    if tags.dropped > 0 {
        warnings.push(format!(
            "{} more tags were left out (results keep at most {MAX_TAGS} tags, {MAX_TAG_BYTES} bytes of them)",
            tags.dropped
        ));
    }
    let tags = tags.kept;
    if measured.silence_spans_dropped > 0 {
        warnings.push(format!("{} more silent spans are counted in the total but not listed", measured.silence_spans_dropped));
    }
    let result = AudioResult {
        schema_version: SCHEMA_VERSION,
        codec: codec_name.to_owned(),
        decoder: decoder_name.to_owned(),
        sample_rate: stream.sample_rate,
        channels,
        bits_per_sample: stream.bits_per_sample,
        duration_s,
        declared_duration_s,
        bitrate_bps: (bytes.len() as f64 * 8.0 / duration_s) as u64,
        tags,
        levels: measured.levels,
        silence: measured.silence,
        waveform_buckets: measured.waveform.peaks.len() as u32,
        warnings,
    };
    Ok(Analysed { result, waveform: measured.waveform })
}

fn decode_with_symphonia(
    format: &mut dyn FormatReader,
    track_id: u32,
    stream: &Stream,
    deadline: Instant,
    progress: &Progress,
) -> Result<(Meter, Vec<String>), AudioError> {
    let params = format
        .tracks()
        .iter()
        .find(|t| t.id == track_id)
        .map(|t| t.codec_params.clone())
        .ok_or_else(|| AudioError::Corrupt("the track vanished".into()))?;
    let mut decoder =
        symphonia::default::get_codecs().make(&params, &DecoderOptions::default()).map_err(|e| AudioError::Unsupported(e.to_string()))?;
    let mut meter: Option<MeterThread> = None;
    let mut samples: Option<SampleBuffer<f32>> = None;
    let mut warnings = Vec::new();
    let mut bad_packets = 0u64;
    let mut packets = 0u64;
    let mut frames = 0u64;
    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(SymphoniaError::ResetRequired) => break,
            // A broken container structure after some audio: keep what decoded.
            Err(e) if frames > 0 => {
                warnings.push(format!("stopped at a damaged part of the file: {e}"));
                break;
            }
            Err(e) => return Err(AudioError::Corrupt(e.to_string())),
        };
        if packet.track_id() != track_id {
            continue;
        }
        packets += 1;
        if packets.is_multiple_of(CHECK_EVERY_PACKETS) {
            check_in(deadline, progress, stream.declared_frames.map(|total| frames as f32 / total.max(1) as f32))?;
        }
        let decoded = match decoder.decode(&packet) {
            Ok(d) => d,
            // A damaged frame: skip it, as players and ffmpeg do, and say so.
            Err(SymphoniaError::DecodeError(_)) => {
                bad_packets += 1;
                continue;
            }
            Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(AudioError::Corrupt(e.to_string())),
        };
        if decoded.frames() == 0 {
            continue;
        }
        let spec = *decoded.spec();
        let buffer = match &mut samples {
            Some(b) if b.capacity() >= decoded.capacity() * spec.channels.count() => b,
            slot => slot.insert(SampleBuffer::new(decoded.capacity() as u64, spec)),
        };
        buffer.copy_interleaved_ref(decoded);
        frames += (buffer.len() / spec.channels.count()) as u64;
        let meter = match &mut meter {
            Some(m) => m,
            slot => slot.insert(MeterThread::spawn(Meter::new(spec.rate, spec.channels.count())?)),
        };
        meter.push(buffer.samples());
    }
    if bad_packets > 0 {
        warnings.push(format!("{bad_packets} of {packets} packets could not be decoded and were skipped"));
    }
    let meter = match meter {
        Some(m) => m.finish(),
        None => Meter::new(stream.sample_rate, stream.channels.max(1))?,
    };
    Ok((meter, warnings))
}

/// Packets decoded between looks at the deadline and the cancel flag.
pub(crate) const CHECK_EVERY_PACKETS: u64 = 256;

/// Between packets: stops at the deadline or on a cancel, and reports how far
/// decoding has got when the container said how long the stream is.
pub(crate) fn check_in(deadline: Instant, progress: &Progress, done: Option<f32>) -> Result<(), AudioError> {
    if Instant::now() > deadline {
        return Err(AudioError::Deadline);
    }
    if progress.cancelled() {
        return Err(AudioError::Cancelled);
    }
    if let Some(done) = done {
        progress.report(done);
    }
    Ok(())
}

/// Decodes through ffmpeg to 32-bit float samples on a pipe.
fn decode_with_ffmpeg(bytes: &[u8], stream: &Stream, deadline: Instant, progress: &Progress) -> Result<Meter, AudioError> {
    let channels = stream.channels.clamp(1, 8);
    let mut file = tempfile::NamedTempFile::new().map_err(|e| AudioError::Ffmpeg(FfmpegError::Io(e)))?;
    std::io::Write::write_all(&mut file, bytes).map_err(|e| AudioError::Ffmpeg(FfmpegError::Io(e)))?;
    let path = file.path().to_string_lossy().into_owned();
    let (rate, ch) = (stream.sample_rate.to_string(), channels.to_string());
    let mut args = vec!["-v", "error", "-i", path.as_str(), "-map", "0:a:0", "-f", "f32le", "-ac", ch.as_str()];
    // Opus decodes at 48 kHz: asking for it again would put a resampler in the way.
    if stream.sample_rate != 48_000 {
        args.extend(["-ar", rate.as_str()]);
    }
    args.push("-");
    let mut meter = MeterThread::spawn(Meter::new(stream.sample_rate, channels)?);
    let mut carry: Vec<u8> = Vec::new();
    let mut samples: Vec<f32> = Vec::new();
    let mut frames = 0u64;
    let total = stream.declared_frames.unwrap_or(0).max(1) as f32;
    let report = ffmpeg::run_piped(args, deadline, |chunk| {
        // Samples can straddle chunks: keep the remainder for the next one.
        carry.extend_from_slice(chunk);
        let whole = carry.len() / (4 * channels) * (4 * channels);
        samples.clear();
        samples.extend(carry[..whole].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
        carry.drain(..whole);
        meter.push(&samples);
        frames += (samples.len() / channels) as u64;
        progress.report(frames as f32 / total);
    })
    .map_err(AudioError::Ffmpeg)?;
    let meter = meter.finish();
    if !report.success && meter.frames() == 0 {
        return Err(AudioError::Corrupt(report.reason("ffmpeg could not decode it")));
    }
    Ok(meter)
}

/// A [`Meter`] on a thread of its own, fed the decoded samples through a
/// short queue: measuring (the EBU R128 filter above all) costs about as much
/// as decoding most codecs, so the two overlap instead of adding up.
/// Samples go over in batches of [`MeterThread::BATCH_FRAMES`]: one hand-over
/// per decoded packet (1,152 frames of MP3) spent a tenth of the time waking
/// threads. Buffers go back and forth, so the steady state allocates nothing.
pub(crate) struct MeterThread {
    channels: usize,
    batch: Vec<f32>,
    filled: Option<mpsc::SyncSender<Vec<f32>>>,
    emptied: mpsc::Receiver<Vec<f32>>,
    thread: std::thread::JoinHandle<Meter>,
}

impl MeterThread {
    /// About 190 ms at 44.1 kHz.
    const BATCH_FRAMES: usize = 8192;

    pub(crate) fn spawn(mut meter: Meter) -> Self {
        let channels = meter.channels();
        let (filled, to_measure) = mpsc::sync_channel::<Vec<f32>>(4);
        let (give_back, emptied) = mpsc::sync_channel::<Vec<f32>>(8);
        let thread = std::thread::spawn(move || {
            for samples in to_measure {
                meter.push(&samples);
                // The decoder may have stopped taking them back; the buffer is then just dropped.
                let _ = give_back.try_send(samples);
            }
            meter
        });
        let batch = Vec::with_capacity(Self::BATCH_FRAMES * channels);
        Self { channels, batch, filled: Some(filled), emptied, thread }
    }

    /// Takes whole frames of interleaved samples.
    pub(crate) fn push(&mut self, samples: &[f32]) {
        let whole = samples.len() / self.channels * self.channels;
        self.batch.extend_from_slice(&samples[..whole]);
        if self.batch.len() >= Self::BATCH_FRAMES * self.channels {
            self.send();
        }
    }

    fn send(&mut self) {
        let mut next = self.emptied.try_recv().unwrap_or_else(|_| Vec::with_capacity(self.batch.capacity()));
        next.clear();
        let full = std::mem::replace(&mut self.batch, next);
        if let Some(filled) = &self.filled {
            // Fails only if the meter thread died, which `finish` reports.
            let _ = filled.send(full);
        }
    }

    pub(crate) fn finish(mut self) -> Meter {
        if !self.batch.is_empty() {
            self.send();
        }
        drop(self.filled.take());
        // The meter is arithmetic on slices; a panic there is a bug, not bad input.
        self.thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

fn codec_name(codec: CodecType) -> &'static str {
    if codec == CODEC_TYPE_OPUS {
        return "opus";
    }
    symphonia::default::get_codecs().get_codec(codec).map_or("unknown", |d| d.short_name)
}

/// A result travels in an SNS message (256 KB) and a DynamoDB item (400 KB):
/// a file's tags, which it may have any number of, get a fixed share of that.
const MAX_TAGS: usize = 64;
const MAX_TAG_KEY: usize = 64;
const MAX_TAG_VALUE: usize = 1024;
const MAX_TAG_BYTES: usize = 16 * 1024;

/// The tags kept for the result, and how many were left out.
#[derive(Debug, Default)]
struct Tags {
    kept: BTreeMap<String, String>,
    bytes: usize,
    dropped: usize,
}

impl Tags {
    fn offer(&mut self, key: String, value: String) {
        if self.kept.contains_key(&key) {
            return;
        }
        let size = key.len() + value.len();
        if self.kept.len() >= MAX_TAGS || key.len() > MAX_TAG_KEY || self.bytes + size > MAX_TAG_BYTES {
            self.dropped += 1;
            return;
        }
        self.bytes += size;
        self.kept.insert(key, value);
    }
}

fn collect_tags(revision: &MetadataRevision, tags: &mut Tags) {
    for tag in revision.tags() {
        let key = match tag.std_key {
            Some(StandardTagKey::TrackTitle) => "title".to_owned(),
            Some(StandardTagKey::Artist) => "artist".to_owned(),
            Some(StandardTagKey::Album) => "album".to_owned(),
            Some(StandardTagKey::AlbumArtist) => "album_artist".to_owned(),
            Some(StandardTagKey::Date) => "date".to_owned(),
            Some(StandardTagKey::Genre) => "genre".to_owned(),
            Some(StandardTagKey::TrackNumber) => "track".to_owned(),
            Some(StandardTagKey::Composer) => "composer".to_owned(),
            Some(StandardTagKey::Comment) => "comment".to_owned(),
            Some(StandardTagKey::Encoder) => "encoder".to_owned(),
            _ => tag.key.to_lowercase(),
        };
        let value = tag.value.to_string();
        // Cover art and other binary values are not tags a client can show.
        if !value.is_empty() && value.len() <= MAX_TAG_VALUE {
            tags.offer(key, value);
        }
    }
}

#[cfg(test)]
mod tag_tests {
    use super::*;

    #[test]
    fn tags_are_bounded_in_count_key_length_and_bytes() {
        let mut tags = Tags::default();
        for i in 0..200 {
            tags.offer(format!("key{i:03}"), "v".repeat(10));
        }
        tags.offer("k".repeat(65), "long key".into());
        assert_eq!(tags.kept.len(), MAX_TAGS);
        assert_eq!(tags.dropped, 200 - MAX_TAGS + 1);
        let mut big = Tags::default();
        for i in 0..40 {
            big.offer(format!("k{i}"), "v".repeat(MAX_TAG_VALUE - 10));
        }
        assert!(big.bytes <= MAX_TAG_BYTES && big.dropped > 0, "kept {} bytes, dropped {}", big.bytes, big.dropped);
        // The first value of a key wins, as before; a repeat is not a drop.
        big.offer("k0".into(), "other".into());
        assert_eq!(big.kept["k0"].len(), MAX_TAG_VALUE - 10);
    }
}

/// Everything measured from a stream of interleaved samples: the
/// loudness (EBU R128 filtering) and the plain levels, kept apart so that
/// [`MeterThread`] can run them side by side.
#[derive(Debug)]
pub struct Meter {
    loudness: Loudness,
    levels: Levels,
}

/// Peak, RMS and the 10 ms blocks behind the waveform and the silences.
#[derive(Debug)]
struct Levels {
    channels: usize,
    sample_rate: u32,
    peak: f32,
    sum_squares: f64,
    frames: u64,
    block_samples: usize,
    block_filled: usize,
    block_peak: f32,
    block_squares: f64,
    /// Per 10 ms block: peak and mean square.
    blocks: Vec<(f32, f32)>,
}

#[derive(Debug, Clone)]
pub struct Measured {
    pub levels: AudioLevels,
    pub silence: SilenceReport,
    pub silence_spans_dropped: usize,
    pub waveform: Waveform,
}

impl Meter {
    pub fn new(sample_rate: u32, channels: usize) -> Result<Self, AudioError> {
        if channels == 0 || channels > 32 {
            return Err(AudioError::Unsupported(format!("{channels} channels")));
        }
        let loudness = Loudness::new(sample_rate, channels);
        let block_frames = (sample_rate / BLOCKS_PER_SECOND).max(1) as usize;
        let levels = Levels {
            channels,
            sample_rate,
            peak: 0.0,
            sum_squares: 0.0,
            frames: 0,
            block_samples: block_frames * channels,
            block_filled: 0,
            block_peak: 0.0,
            block_squares: 0.0,
            blocks: Vec::new(),
        };
        Ok(Self { loudness, levels })
    }

    /// Frames (samples per channel) seen.
    pub fn frames(&self) -> u64 {
        self.levels.frames
    }

    pub fn channels(&self) -> usize {
        self.levels.channels
    }

    /// Adds interleaved samples (a whole number of frames).
    pub fn push(&mut self, samples: &[f32]) {
        let samples = &samples[..samples.len() / self.levels.channels * self.levels.channels];
        self.loudness.push(samples);
        self.levels.push(samples);
    }

    pub fn finish(mut self) -> Measured {
        let levels = &mut self.levels;
        levels.close_block();
        let samples = (levels.frames * levels.channels as u64).max(1) as f64;
        let db = |amplitude: f64| (amplitude > 0.0).then(|| round2(20.0 * amplitude.log10()));
        let lufs = self.loudness.integrated().map(round2);
        let summary = AudioLevels {
            peak_dbfs: db(f64::from(levels.peak)),
            rms_dbfs: db((levels.sum_squares / samples).sqrt()),
            integrated_lufs: lufs,
        };
        let block_s = f64::from((levels.sample_rate / BLOCKS_PER_SECOND).max(1)) / f64::from(levels.sample_rate);
        let (silence, dropped) = silence(&levels.blocks, block_s);
        let duration_s = levels.frames as f64 / f64::from(levels.sample_rate);
        Measured { levels: summary, silence, silence_spans_dropped: dropped, waveform: waveform(&levels.blocks, duration_s) }
    }
}

impl Levels {
    pub(crate) fn push(&mut self, samples: &[f32]) {
        self.frames += (samples.len() / self.channels) as u64;
        let mut rest = samples;
        while !rest.is_empty() {
            let take = (self.block_samples - self.block_filled).min(rest.len());
            let (now, later) = rest.split_at(take);
            let (peak, squares) = peak_and_squares(now);
            self.block_peak = self.block_peak.max(peak);
            self.block_squares += f64::from(squares);
            self.block_filled += take;
            if self.block_filled == self.block_samples {
                self.close_block();
            }
            rest = later;
        }
    }

    fn close_block(&mut self) {
        if self.block_filled == 0 {
            return;
        }
        self.peak = self.peak.max(self.block_peak);
        self.sum_squares += self.block_squares;
        self.blocks.push((self.block_peak, (self.block_squares / self.block_filled as f64) as f32));
        (self.block_filled, self.block_peak, self.block_squares) = (0, 0.0, 0.0);
    }
}

/// The highest absolute value and the sum of squares of `samples`, kept in
/// eight lanes so that the compiler can use SIMD (one running sum would
/// force it to add in order).
fn peak_and_squares(samples: &[f32]) -> (f32, f32) {
    let (mut peaks, mut squares) = ([0.0f32; 8], [0.0f32; 8]);
    let chunks = samples.chunks_exact(8);
    let rest = chunks.remainder();
    for chunk in chunks {
        for lane in 0..8 {
            peaks[lane] = peaks[lane].max(chunk[lane].abs());
            squares[lane] += chunk[lane] * chunk[lane];
        }
    }
    let mut peak = peaks.iter().fold(0.0f32, |a, &b| a.max(b));
    let mut sum: f32 = squares.iter().sum();
    for &s in rest {
        peak = peak.max(s.abs());
        sum += s * s;
    }
    (peak, sum)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn silence(blocks: &[(f32, f32)], block_s: f64) -> (SilenceReport, usize) {
    let threshold = 10f64.powf(SILENCE_THRESHOLD_DBFS / 10.0) as f32; // on mean squares
    let min_blocks = (SILENCE_MIN_S / block_s).ceil() as usize;
    let mut report = SilenceReport { threshold_dbfs: SILENCE_THRESHOLD_DBFS, min_duration_s: SILENCE_MIN_S, ..Default::default() };
    let mut dropped = 0;
    let mut run_start = None;
    for (i, &(_, mean_square)) in blocks.iter().chain(std::iter::once(&(1.0, 1.0))).enumerate() {
        match (mean_square < threshold, run_start) {
            (true, None) => run_start = Some(i),
            (false, Some(start)) => {
                run_start = None;
                if i - start >= min_blocks {
                    let span = TimeSpan { start_s: round3(start as f64 * block_s), end_s: round3(i as f64 * block_s) };
                    report.total_s += span.end_s - span.start_s;
                    if report.spans.len() < MAX_SILENCE_SPANS { report.spans.push(span) } else { dropped += 1 }
                }
            }
            _ => {}
        }
    }
    report.total_s = round3(report.total_s);
    (report, dropped)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn waveform(blocks: &[(f32, f32)], duration_s: f64) -> Waveform {
    let buckets = WAVEFORM_BUCKETS.min(blocks.len()).max(1);
    let peaks = (0..buckets)
        .map(|i| {
            let range = i * blocks.len() / buckets..((i + 1) * blocks.len() / buckets).max(i * blocks.len() / buckets + 1);
            let peak = blocks.get(range).into_iter().flatten().fold(0.0f32, |p, b| p.max(b.0));
            (peak.min(1.0) * 1000.0).round() / 1000.0
        })
        .collect();
    Waveform { schema_version: SCHEMA_VERSION, duration_s, bucket_s: duration_s / buckets as f64, peaks }
}
