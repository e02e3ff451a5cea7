//! process-video's ffmpeg work on videos encoded here from synthetic sources,
//! and on damaged ones.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use prism_shared::app::processing::{Progress, WorkError};
use prism_shared::bytes::Bytes;
use process_video::media::{COLUMNS, ROWS, TILE_WIDTH, VideoError, analyse};

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

/// Encodes `seconds` of test pattern (and a tone when `audio`) at `size`.
fn encode(dir: &Path, name: &str, size: &str, seconds: u32, audio: bool, extra: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let video = format!("testsrc2=size={size}:rate=25:duration={seconds}");
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-v", "error", "-y", "-f", "lavfi", "-i", &video]);
    if audio {
        cmd.args(["-f", "lavfi", "-i", &format!("sine=frequency=300:duration={seconds}")]);
    }
    cmd.args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "50", "-pix_fmt", "yuv420p"]).args(extra).arg(&out);
    assert!(cmd.status().expect("ffmpeg runs").success(), "encoding {name}");
    out
}

fn decoded(bytes: &[u8]) -> image::DynamicImage {
    image::load_from_memory(bytes).expect("a valid image")
}

#[test]
fn an_mp4_with_audio_is_described_thumbnailed_and_its_audio_extracted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = encode(dir.path(), "v.mp4", "640x360", 10, true, &["-c:a", "aac"]);
    let a = analyse(&path, dir.path(), soon(), &Progress::detached()).expect("analysed");
    let r = &a.result;
    assert!(r.container.contains("mp4"), "{}", r.container);
    assert_eq!((r.video_codec.as_str(), r.width, r.height, r.pixel_format.as_str()), ("h264", 640, 360, "yuv420p"));
    assert!((r.frame_rate - 25.0).abs() < 0.01 && (r.duration_s - 10.0).abs() < 0.1, "{r:?}");
    let audio = r.audio.as_ref().expect("an audio track");
    assert!(r.has_audio && audio.codec == "aac" && audio.extracted, "{audio:?}");

    let output = |name: &str| a.outputs.iter().find(|o| o.name == name).unwrap_or_else(|| panic!("no {name} output"));
    let poster = decoded(&output("poster").bytes);
    assert_eq!((poster.width(), poster.height()), (640, 360));
    assert_eq!((r.poster.width, r.poster.height), (640, 360));
    let sheet = decoded(&output("contact_sheet").bytes);
    assert_eq!((sheet.width(), sheet.height()), (TILE_WIDTH * COLUMNS, 180 * ROWS));
    assert_eq!(r.contact_sheet.timestamps_s.len(), 12);
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    // Every tile has a picture: testsrc2 is never black.
    let rgb = sheet.to_rgb8();
    for i in 0..COLUMNS * ROWS {
        let (x, y) = ((i % COLUMNS) * TILE_WIDTH + TILE_WIDTH / 2, (i / COLUMNS) * 180 + 90);
        assert!(rgb.get_pixel(x, y).0.iter().map(|&c| u32::from(c)).sum::<u32>() > 0, "tile {i} is black");
    }

    // The extracted track is what process-audio reads: the same ten seconds.
    let audio = output("audio");
    assert_eq!((audio.file.as_str(), audio.content_type), ("audio.m4a", "audio/mp4"));
    let heard = process_audio::analysis::analyse(Bytes::from(audio.bytes.clone()), "audio/mp4", soon(), &Progress::detached())
        .expect("process-audio reads the extracted track");
    assert!((heard.result.duration_s - 10.0).abs() < 0.1, "{}", heard.result.duration_s);
}

#[test]
fn a_webm_without_audio_works() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("v.webm");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30:duration=3"])
        .args(["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "300k"])
        .arg(&out)
        .status()
        .expect("ffmpeg runs");
    assert!(status.success());
    let a = analyse(&out, dir.path(), soon(), &Progress::detached()).expect("analysed");
    assert_eq!((a.result.video_codec.as_str(), a.result.width, a.result.height), ("vp9", 320, 240));
    assert!((a.result.frame_rate - 30.0).abs() < 0.01);
    assert!(!a.result.has_audio && a.result.audio.is_none());
    assert!(a.outputs.iter().all(|o| o.name != "audio"));
}

#[test]
fn damaged_and_foreign_files_end_with_a_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The index (moov) is written last by default: cut off, nothing is playable.
    let full = encode(dir.path(), "full.mp4", "320x240", 4, false, &[]);
    let bytes = std::fs::read(&full).expect("encoded");
    let cut = dir.path().join("cut.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("written");
    let e = analyse(&cut, dir.path(), soon(), &Progress::detached()).expect_err("no index");
    assert_eq!(e.code(), "corrupt_video", "{e}");

    // With the index first, a truncated file still gives what it has.
    let fast = encode(dir.path(), "fast.mp4", "320x240", 8, false, &["-movflags", "+faststart"]);
    let bytes = std::fs::read(&fast).expect("encoded");
    let cut = dir.path().join("cut-fast.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("written");
    let a = analyse(&cut, dir.path(), soon(), &Progress::detached()).expect("half a faststart MP4 still has frames");
    assert!(a.result.warnings.iter().any(|w| w.contains("left black")), "{:?}", a.result.warnings);

    let junk = dir.path().join("junk");
    std::fs::write(&junk, [0x42u8; 10_000]).expect("written");
    let e = analyse(&junk, dir.path(), soon(), &Progress::detached()).expect_err("not a video");
    assert_eq!(e.code(), "corrupt_video", "{e}");

    let tone = dir.path().join("tone.wav");
    let status = Command::new("ffmpeg").args(["-v", "error", "-y", "-f", "lavfi", "-i", "sine=duration=1"]).arg(&tone).status();
    assert!(status.expect("ffmpeg runs").success());
    let e = analyse(&tone, dir.path(), soon(), &Progress::detached()).expect_err("no video");
    assert!(matches!(e, VideoError::NoVideo), "{e}");
}

/// A sliver 16 pixels wide would ask for contact-sheet tiles thousands of
/// pixels tall: refused from the probe, before any frame is decoded.
#[test]
fn extreme_dimensions_are_refused_before_decoding() {
    let dir = tempfile::tempdir().expect("temp dir");
    for size in ["16x1024", "1024x16"] {
        let sliver = encode(dir.path(), &format!("{size}.mp4"), size, 1, false, &[]);
        let e = analyse(&sliver, dir.path(), soon(), &Progress::detached()).expect_err(size);
        assert_eq!(e.code(), "unsupported_dimensions", "{size}: {e}");
    }
    // Wide but ordinary (32:9) is fine.
    let wide = encode(dir.path(), "wide.mp4", "640x180", 1, false, &[]);
    analyse(&wide, dir.path(), soon(), &Progress::detached()).expect("32:9 is analysed");
}

#[test]
fn ffmpeg_is_stopped_at_the_deadline() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = encode(dir.path(), "v.mp4", "320x240", 2, false, &[]);
    let e = analyse(&path, dir.path(), Instant::now(), &Progress::detached()).expect_err("past the deadline");
    assert_eq!(e.code(), "deadline_exceeded", "{e}");
}

#[tokio::test]
async fn the_handler_streams_the_input_to_disk_and_writes_every_output() {
    use std::sync::Arc;

    use aws_lambda_events::sqs::SqsEvent;
    use prism_shared::JobStatus;
    use prism_shared::domain::results::JobResult;
    use prism_shared::ports::JobStore;
    use prism_shared::testing::memory::{MemoryBlobStore, MemoryJobStore};
    use prism_shared::testing::{memory_deps, queued_job, sample_event};
    use process_video::{Config, Deps, handle};

    let dir = tempfile::tempdir().expect("temp dir");
    let clip = std::fs::read(encode(dir.path(), "v.mp4", "320x240", 4, true, &["-c:a", "aac"])).expect("clip");
    let event: SqsEvent = sample_event("sqs-process-video-command.json");
    let (jobs, blobs) = (Arc::new(MemoryJobStore::default()), Arc::new(MemoryBlobStore::default()));
    let (id, upload) = queued_job(jobs.as_ref(), "0196f0a0-0000-7000-8000-0000000f1170", "clip.mp4").await;
    blobs.insert(&upload, clip);
    let deps = memory_deps(jobs.clone(), blobs.clone(), Config { max_bytes: 50 * 1024 * 1024, deadline: Duration::from_secs(60) });
    assert!(handle(&deps, event).await.batch_item_failures.is_empty());
    let job = jobs.get(&id).await.expect("get").expect("job");
    assert_eq!(job.status, JobStatus::Completed, "{:?}", job.error);
    let Some(JobResult::Video(result)) = &job.result else { panic!("not a video result: {:?}", job.result) };
    assert_eq!((result.width, result.height, result.has_audio), (320, 240, true));
    let outputs: Vec<(&str, &str)> = job.outputs.iter().map(|o| (o.name.as_str(), o.content_type.as_str())).collect();
    assert_eq!(outputs, [("poster", "image/jpeg"), ("contact_sheet", "image/jpeg"), ("audio", "audio/mp4")]);
    for output in &job.outputs {
        assert!(output.uri.key.starts_with(&format!("outputs/{id}/")), "{}", output.uri);
        assert_eq!(blobs.object(&output.uri).expect("written").0.len() as u64, output.size);
    }

    // Over the size limit: failed with a reason before anything is decoded.
    let small = Deps { config: Config { max_bytes: 1_000, deadline: Duration::from_secs(60) }, ..deps.clone() };
    let (other, upload) = queued_job(jobs.as_ref(), "0196f0a0-0000-7000-8000-0000000f1171", "clip.mp4").await;
    blobs.insert(&upload, vec![0u8; 5_000]);
    let mut event: SqsEvent = sample_event("sqs-process-video-command.json");
    event.records[0].body = event.records[0].body.as_ref().map(|b| b.replace(id.as_str(), other.as_str()));
    assert!(handle(&small, event).await.batch_item_failures.is_empty());
    let job = jobs.get(&other).await.expect("get").expect("job");
    assert_eq!((job.status, job.error.map(|e| e.code)), (JobStatus::Failed, Some("too_large".into())));
}
