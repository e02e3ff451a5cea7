//! What process-video asks of ffmpeg: a probe, keyframe thumbnails taken by
//! seeking before the input (so only the keyframe at each point is decoded,
//! never the whole file), and the audio track. Every call runs under the
//! job's deadline. The contact sheet is composed here from the tiles.

use std::path::Path;
use std::time::Instant;

use image::{ImageEncoder, RgbImage};
use prism_shared::app::processing::{Progress, WorkError};
use prism_shared::content::ffmpeg::{self, FfmpegError, FfmpegReport, StreamTypeSpecificData};
use prism_shared::domain::breakers::Dependency;
use prism_shared::domain::results::{ContactSheet, Thumbnail, VideoAudioTrack, VideoResult};

pub const SCHEMA_VERSION: u32 = 1;
/// The longest side accepted: 16K, twice 8K's width.
pub const MAX_SIDE: u32 = 16_384;
/// The widest aspect accepted either way (32:9 is about 3.6): past it the
/// contact sheet's tiles, all 320 pixels wide, would be slivers or towers
/// (a 16×16,384 stream asks for tiles 327,680 pixels tall).
pub const MAX_ASPECT: u32 = 4;

/// Contact sheet grid and tile width.
pub const COLUMNS: u32 = 4;
pub const ROWS: u32 = 3;
pub const TILE_WIDTH: u32 = 320;
/// The poster's longest edge.
pub const POSTER_SIZE: u32 = 1280;

#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    #[error("not a video ffmpeg can read: {0}")]
    Corrupt(String),
    #[error("the file has no video stream")]
    NoVideo,
    #[error("cancelled")]
    Cancelled,
    #[error(transparent)]
    Ffmpeg(#[from] FfmpegError),
    #[error("encoding the contact sheet: {0}")]
    Encode(String),
    #[error("the scratch folder failed: {0}")]
    Scratch(String),
    #[error("{width}×{height} is over {MAX_SIDE} pixels a side or {MAX_ASPECT}:1 either way")]
    Dimensions { width: u32, height: u32 },
}

impl WorkError for VideoError {
    /// A panic while reading ffmpeg's output is about this file's streams.
    const PANIC_CODE: &'static str = "decoder_failed";

    fn code(&self) -> &'static str {
        match self {
            Self::Corrupt(_) => "corrupt_video",
            Self::NoVideo => "no_video_stream",
            Self::Cancelled => "cancelled",
            Self::Ffmpeg(FfmpegError::Deadline(_)) => "deadline_exceeded",
            Self::Ffmpeg(_) | Self::Encode(_) => "decoder_failed",
            Self::Scratch(_) => "scratch_failed",
            Self::Dimensions { .. } => "unsupported_dimensions",
        }
    }

    /// An ffmpeg that will not start is down, not this video's fault.
    fn unavailable(&self) -> Option<Dependency> {
        matches!(self, Self::Ffmpeg(FfmpegError::Spawn(_))).then_some(Dependency::Ffmpeg)
    }
}

/// An output file made from the video.
#[derive(Debug, Clone)]
pub struct Produced {
    pub name: &'static str,
    pub file: String,
    pub content_type: &'static str,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct Analysed {
    pub result: VideoResult,
    pub outputs: Vec<Produced>,
}

/// What the probe found.
#[derive(Debug, Clone)]
pub struct Probe {
    pub container: String,
    pub duration_s: f64,
    pub codec: String,
    pub width: u32,
    pub height: u32,
    pub frame_rate: f64,
    pub pixel_format: String,
    pub audio: Option<(String, u32, String)>,
}

/// `ffmpeg -i FILE` with no output: it prints the input's description and exits.
pub fn probe(path: &Path, deadline: Instant) -> Result<Probe, VideoError> {
    let path = path.to_string_lossy();
    let report = ffmpeg::run(["-i", path.as_ref()], deadline)?;
    probe_from(&report)
}

fn probe_from(report: &FfmpegReport) -> Result<Probe, VideoError> {
    if report.streams.is_empty() {
        return Err(VideoError::Corrupt(report.reason("ffmpeg found no streams")));
    }
    let video = report.streams.iter().find_map(|s| match &s.type_specific_data {
        // Cover art is a one-frame "video" inside audio files; a real video has a rate.
        StreamTypeSpecificData::Video(v) if !s.raw_log_message.contains("attached pic") => Some((s.format.clone(), v)),
        _ => None,
    });
    let Some((codec, video)) = video else { return Err(VideoError::NoVideo) };
    if video.width == 0 || video.height == 0 {
        return Err(VideoError::Corrupt("the video stream has no size".into()));
    }
    let (long, short) = (video.width.max(video.height), video.width.min(video.height));
    if long > MAX_SIDE || long > short.saturating_mul(MAX_ASPECT) {
        return Err(VideoError::Dimensions { width: video.width, height: video.height });
    }
    let audio = report.streams.iter().find_map(|s| match &s.type_specific_data {
        StreamTypeSpecificData::Audio(a) => Some((s.format.clone(), a.sample_rate, a.channels.clone())),
        _ => None,
    });
    Ok(Probe {
        container: report.container.clone().unwrap_or_default(),
        duration_s: report.duration_s.unwrap_or(0.0),
        codec,
        width: video.width,
        height: video.height,
        frame_rate: (f64::from(video.fps) * 1000.0).round() / 1000.0,
        pixel_format: video.pix_fmt.clone(),
        audio,
    })
}

/// Where the tiles are taken: the middles of equal slices of the duration.
pub fn tile_times(duration_s: f64, tiles: u32) -> Vec<f64> {
    (0..tiles).map(|i| ((f64::from(i) + 0.5) * duration_s / f64::from(tiles) * 1000.0).round() / 1000.0).collect()
}

/// The seek-before-input arguments that make ffmpeg decode one keyframe near
/// `at_s` (the one at or before it). The output side needs `-fps_mode
/// passthrough`, or that keyframe, stamped before `at_s`, would be dropped.
fn keyframe_input(path: &str, at_s: f64) -> Vec<String> {
    ["-skip_frame", "nokey", "-ss", &format!("{at_s:.3}"), "-noaccurate_seek", "-i", path].map(str::to_owned).to_vec()
}

/// One keyframe near `at_s`, scaled into `width`×`height` (letterboxed), as RGB.
pub fn keyframe_rgb(path: &Path, at_s: f64, width: u32, height: u32, deadline: Instant) -> Result<Option<RgbImage>, VideoError> {
    let mut args = keyframe_input(&path.to_string_lossy(), at_s);
    let fit = format!(
        "scale={width}:{height}:force_original_aspect_ratio=decrease,pad={width}:{height}:(ow-iw)/2:(oh-ih)/2,setsar=1,format=rgb24"
    );
    args.extend(["-map", "0:v:0", "-frames:v", "1", "-fps_mode", "passthrough", "-vf", &fit, "-f", "rawvideo", "-"].map(str::to_owned));
    let mut pixels = Vec::with_capacity((width * height * 3) as usize);
    ffmpeg::run_piped(args, deadline, |chunk| pixels.extend_from_slice(chunk))?;
    // No frame there (a damaged stretch, or past a truncated end): the tile stays empty.
    Ok(RgbImage::from_raw(width, height, pixels))
}

/// The poster: a keyframe a tenth of the way in (past fades from black),
/// at most [`POSTER_SIZE`] on its longest edge, as JPEG.
pub fn poster(path: &Path, duration_s: f64, deadline: Instant) -> Result<Option<Vec<u8>>, VideoError> {
    let mut args = keyframe_input(&path.to_string_lossy(), duration_s * 0.1);
    // Fit inside the box but never enlarge (the commas inside min() are escaped for the filter graph).
    let fit =
        format!("scale=w=min({POSTER_SIZE}\\,iw):h=min({POSTER_SIZE}\\,ih):force_original_aspect_ratio=decrease:force_divisible_by=2");
    args.extend(
        ["-map", "0:v:0", "-frames:v", "1", "-fps_mode", "passthrough", "-vf", &fit, "-f", "image2pipe", "-c:v", "mjpeg", "-q:v", "3", "-"]
            .map(str::to_owned),
    );
    let mut jpeg = Vec::new();
    ffmpeg::run_piped(args, deadline, |chunk| jpeg.extend_from_slice(chunk))?;
    Ok((!jpeg.is_empty()).then_some(jpeg))
}

/// How the audio track is saved for process-audio: copied as it is where a
/// container symphonia reads can hold it, otherwise re-encoded to FLAC.
fn audio_target(codec: &str) -> (&'static [&'static str], &'static str, &'static str, &'static str) {
    match codec {
        "aac" | "alac" => (&["-c:a", "copy", "-f", "ipod"], "audio.m4a", "audio/mp4", "ipod"),
        "mp3" => (&["-c:a", "copy", "-f", "mp3"], "audio.mp3", "audio/mpeg", "mp3"),
        "opus" | "vorbis" => (&["-c:a", "copy", "-f", "ogg"], "audio.ogg", "audio/ogg", "ogg"),
        _ => (&["-c:a", "flac", "-f", "flac"], "audio.flac", "audio/flac", "flac"),
    }
}

/// Extracts the first audio track into `dir`.
pub fn extract_audio(path: &Path, codec: &str, dir: &Path, deadline: Instant) -> Result<Option<Produced>, VideoError> {
    let (codec_args, file, content_type, _) = audio_target(codec);
    let out = dir.join(file);
    let mut args: Vec<String> = ["-v", "error", "-y", "-i"].map(str::to_owned).to_vec();
    args.push(path.to_string_lossy().into_owned());
    args.extend(["-map", "0:a:0", "-vn", "-sn", "-dn", "-map_metadata", "-1"].map(str::to_owned));
    args.extend(codec_args.iter().map(|s| (*s).to_owned()));
    args.push(out.to_string_lossy().into_owned());
    let report = ffmpeg::run(args, deadline)?;
    if !report.success {
        // ffmpeg could not copy or encode the track: the video has no usable audio.
        return Ok(None);
    }
    // ffmpeg said it wrote the file: failing to read it back is this machine's problem, not the video's.
    let bytes = std::fs::read(&out).map_err(|e| VideoError::Scratch(format!("reading the extracted audio: {e}")))?;
    if bytes.is_empty() {
        return Ok(None);
    }
    Ok(Some(Produced { name: "audio", file: file.to_owned(), content_type, bytes }))
}

/// The poster and the contact sheet, as JPEG.
type PosterAndSheet = (Vec<u8>, Vec<u8>);

/// The ffmpeg arguments for part of the work: the poster (when `poster_at`
/// is given, to `poster`) and the tiles at `times`, stacked `COLUMNS` to a
/// row, as raw RGB to `rows_out`. Every input is the same file, seeked
/// before it is opened and decoding one keyframe on one thread.
fn part_args(file: &str, poster_at: Option<f64>, times: &[f64], tile_height: u32, poster: &Path, rows_out: &Path) -> Vec<String> {
    let mut args: Vec<String> = ["-v", "error", "-y"].map(str::to_owned).to_vec();
    for at in poster_at.iter().chain(times) {
        args.extend(["-threads", "1"].map(str::to_owned));
        args.extend(keyframe_input(file, *at));
    }
    let first_frame = "trim=end_frame=1,setpts=0";
    let mut graph = String::new();
    let offset = usize::from(poster_at.is_some());
    if poster_at.is_some() {
        graph.push_str(&format!(
            "[0:v:0]{first_frame},scale=w=min({POSTER_SIZE}\\,iw):h=min({POSTER_SIZE}\\,ih):force_original_aspect_ratio=decrease:force_divisible_by=2[poster];"
        ));
    }
    for i in 0..times.len() {
        graph.push_str(&format!(
            "[{}:v:0]{first_frame},scale={TILE_WIDTH}:{tile_height}:force_original_aspect_ratio=decrease,pad={TILE_WIDTH}:{tile_height}:(ow-iw)/2:(oh-ih)/2,setsar=1[t{i}];",
            i + offset
        ));
    }
    let rows = times.len() / COLUMNS as usize;
    for row in 0..rows {
        let tiles: String = (0..COLUMNS as usize).map(|c| format!("[t{}]", row * COLUMNS as usize + c)).collect();
        graph.push_str(&format!("{tiles}hstack=inputs={COLUMNS}[r{row}];"));
    }
    let stacked: String = (0..rows).map(|r| format!("[r{r}]")).collect();
    graph.push_str(&if rows > 1 {
        format!("{stacked}vstack=inputs={rows},format=rgb24[rows]")
    } else {
        "[r0]format=rgb24[rows]".to_owned()
    });
    args.extend(["-filter_complex".to_owned(), graph]);
    if poster_at.is_some() {
        args.extend(["-map", "[poster]", "-frames:v", "1", "-q:v", "3"].map(str::to_owned));
        args.push(poster.to_string_lossy().into_owned());
    }
    args.extend(["-map", "[rows]", "-frames:v", "1", "-f", "rawvideo"].map(str::to_owned));
    args.push(rows_out.to_string_lossy().into_owned());
    args
}

/// The poster and the contact sheet from two ffmpeg runs side by side (one
/// per core): the poster with the first row, and the other rows. Thirteen
/// processes would spend more time starting than decoding. `None` when any
/// tile is missing (a damaged or truncated file): the caller then takes the
/// tiles one by one.
fn poster_and_sheet(
    path: &Path,
    probe: &Probe,
    times: &[f64],
    tile_height: u32,
    scratch: &Path,
    deadline: Instant,
) -> Result<Option<PosterAndSheet>, VideoError> {
    let file = path.to_string_lossy();
    let split = COLUMNS as usize;
    let (poster, first, rest) = (scratch.join("poster.jpg"), scratch.join("rows-first.rgb"), scratch.join("rows-rest.rgb"));
    let with_poster =
        ffmpeg::spawn(part_args(&file, Some(probe.duration_s * 0.1), &times[..split], tile_height, &poster, &first), deadline, false)?;
    let others = ffmpeg::spawn(part_args(&file, None, &times[split..], tile_height, &poster, &rest), deadline, false)?;
    let (a, b) = (with_poster.finish()?, others.finish()?);
    let read = |p: &Path| std::fs::read(p).ok().filter(|b| !b.is_empty());
    let (Some(poster), Some(mut pixels), Some(rest)) = (read(&poster), read(&first), read(&rest)) else { return Ok(None) };
    pixels.extend_from_slice(&rest);
    let Some(sheet) = RgbImage::from_raw(TILE_WIDTH * COLUMNS, tile_height * ROWS, pixels).filter(|_| a.success && b.success) else {
        return Ok(None);
    };
    Ok(Some((poster, encode_sheet(&sheet)?)))
}

fn encode_sheet(sheet: &RgbImage) -> Result<Vec<u8>, VideoError> {
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 80)
        .write_image(sheet.as_raw(), sheet.width(), sheet.height(), image::ExtendedColorType::Rgb8)
        .map_err(|e| VideoError::Encode(e.to_string()))?;
    Ok(jpeg)
}

/// The contact sheet tile by tile, leaving black what cannot be decoded.
fn sheet_tile_by_tile(
    path: &Path,
    times: &[f64],
    tile_height: u32,
    deadline: Instant,
    progress: &Progress,
    warnings: &mut Vec<String>,
) -> Result<Vec<u8>, VideoError> {
    let mut sheet = RgbImage::new(TILE_WIDTH * COLUMNS, tile_height * ROWS);
    let mut missing = 0;
    for (i, &at) in times.iter().enumerate() {
        if progress.cancelled() {
            return Err(VideoError::Cancelled);
        }
        match keyframe_rgb(path, at, TILE_WIDTH, tile_height, deadline)? {
            Some(tile) => {
                let (x, y) = ((i as u32 % COLUMNS) * TILE_WIDTH, (i as u32 / COLUMNS) * tile_height);
                image::imageops::replace(&mut sheet, &tile, i64::from(x), i64::from(y));
            }
            None => missing += 1,
        }
        progress.report_counted(0.1 + 0.6 * (i + 1) as f32 / times.len() as f32, i as u64 + 1, times.len() as u64);
    }
    if missing > 0 {
        warnings.push(format!("{missing} of {} contact sheet frames could not be decoded and are left black", times.len()));
    }
    encode_sheet(&sheet)
}

/// Probes, takes the poster and the contact sheet's keyframes, and extracts
/// the audio: everything process-video reports.
pub fn analyse(path: &Path, scratch: &Path, deadline: Instant, progress: &Progress) -> Result<Analysed, VideoError> {
    let probe = probe(path, deadline)?;
    let mut warnings = Vec::new();
    let mut outputs = Vec::new();
    if probe.duration_s <= 0.0 {
        warnings.push("the container states no duration; thumbnails are taken from the start".into());
    }
    progress.report(0.1);
    // Tiles keep the display aspect of the video, in even pixels.
    let tile_height = ((TILE_WIDTH * probe.height / probe.width).max(2) + 1) & !1;
    let times = tile_times(probe.duration_s, COLUMNS * ROWS);
    let (poster, sheet) = match poster_and_sheet(path, &probe, &times, tile_height, scratch, deadline)? {
        Some(both) => both,
        None => {
            let Some(poster) = poster(path, probe.duration_s, deadline)? else {
                return Err(VideoError::Corrupt("no frame could be decoded".into()));
            };
            (poster, sheet_tile_by_tile(path, &times, tile_height, deadline, progress, &mut warnings)?)
        }
    };
    progress.report(0.7);
    let (poster_width, poster_height) = jpeg_size(&poster)?;
    outputs.push(Produced { name: "poster", file: "poster.jpg".into(), content_type: "image/jpeg", bytes: poster });
    outputs.push(Produced { name: "contact_sheet", file: "contact-sheet.jpg".into(), content_type: "image/jpeg", bytes: sheet });

    let mut audio = None;
    if let Some((codec, sample_rate, channels)) = &probe.audio {
        if progress.cancelled() {
            return Err(VideoError::Cancelled);
        }
        let extracted = extract_audio(path, codec, scratch, deadline)?;
        if extracted.is_none() {
            warnings.push("the audio track could not be extracted".into());
        }
        audio = Some(VideoAudioTrack {
            codec: codec.clone(),
            sample_rate: *sample_rate,
            channels: channels.clone(),
            extracted: extracted.is_some(),
        });
        outputs.extend(extracted);
    }
    progress.report(1.0);
    let result = VideoResult {
        schema_version: SCHEMA_VERSION,
        container: probe.container,
        duration_s: probe.duration_s,
        video_codec: probe.codec,
        width: probe.width,
        height: probe.height,
        frame_rate: probe.frame_rate,
        pixel_format: probe.pixel_format,
        has_audio: audio.is_some(),
        audio,
        poster: Thumbnail { name: "poster".into(), width: poster_width, height: poster_height, content_type: "image/jpeg".into() },
        contact_sheet: ContactSheet { columns: COLUMNS, rows: ROWS, tile_width: TILE_WIDTH, tile_height, timestamps_s: times },
        warnings,
    };
    Ok(Analysed { result, outputs })
}

fn jpeg_size(jpeg: &[u8]) -> Result<(u32, u32), VideoError> {
    image::ImageReader::with_format(std::io::Cursor::new(jpeg), image::ImageFormat::Jpeg)
        .into_dimensions()
        .map_err(|e| VideoError::Corrupt(format!("ffmpeg's poster is not a JPEG: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_sit_in_the_middle_of_equal_slices() {
        assert_eq!(tile_times(12.0, 4), [1.5, 4.5, 7.5, 10.5]);
        assert_eq!(tile_times(0.0, 2), [0.0, 0.0]);
    }

    #[test]
    fn audio_is_copied_where_a_container_can_hold_it() {
        assert_eq!(audio_target("aac").1, "audio.m4a");
        assert_eq!(audio_target("opus").1, "audio.ogg");
        assert_eq!(audio_target("pcm_s16le").1, "audio.flac");
    }
}
