//! The analysis on real encodings: WAV written here, MP3/Opus/AAC encoded by
//! ffmpeg from synthetic sources, and damaged copies of them.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use prism_shared::app::processing::{Progress, WorkError};
use prism_shared::bytes::Bytes;
use process_audio::analysis::{AudioError, analyse};

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

/// 16-bit PCM WAV; `declared_frames` lets the header lie about the length.
fn wav(rate: u32, channels: u16, frames: &[Vec<f32>], declared_frames: Option<u32>) -> Vec<u8> {
    let data_len = declared_frames.unwrap_or(frames.len() as u32) * u32::from(channels) * 2;
    let mut out = Vec::new();
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * u32::from(channels) * 2).to_le_bytes());
    out.extend_from_slice(&(channels * 2).to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for frame in frames {
        for s in frame {
            out.extend_from_slice(&((s * 32767.0).round() as i16).to_le_bytes());
        }
    }
    out
}

/// `seconds` of a 1 kHz sine at `amplitude` in both channels, silent between `gap`.
fn sine(rate: u32, seconds: f64, amplitude: f32, gap: Option<(f64, f64)>) -> Vec<Vec<f32>> {
    (0..(seconds * f64::from(rate)) as usize)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            let silent = gap.is_some_and(|(a, b)| t >= a && t < b);
            let s = if silent { 0.0 } else { amplitude * (2.0 * std::f64::consts::PI * 1000.0 * t).sin() as f32 };
            vec![s, s]
        })
        .collect()
}

fn ffmpeg(args: &[&str], out: &Path) -> Bytes {
    let status = Command::new("ffmpeg").args(["-hide_banner", "-v", "error", "-y"]).args(args).arg(out).status().expect("ffmpeg runs");
    assert!(status.success(), "ffmpeg {args:?}");
    Bytes::from(std::fs::read(out).expect("encoded file"))
}

/// Peak and RMS level in dBFS as ffmpeg's `astats` filter measures them.
fn ffmpeg_levels(path: &Path) -> (f64, f64) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-i"])
        .arg(path)
        .args(["-af", "astats=measure_overall=Peak_level+RMS_level:measure_perchannel=none", "-f", "null", "-"])
        .output()
        .expect("ffmpeg runs");
    let log = String::from_utf8_lossy(&out.stderr);
    let level = |name: &str| -> f64 {
        let line = log.lines().find(|l| l.contains(name)).unwrap_or_else(|| panic!("no {name} in {log}"));
        line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("unparsable {line}"))
    };
    (level("Peak level dB:"), level("RMS level dB:"))
}

#[test]
fn a_wav_is_measured_exactly() {
    let bytes = Bytes::from(wav(48_000, 2, &sine(48_000, 3.0, 0.1, Some((1.0, 2.0))), None));
    let a = analyse(bytes, "audio/wav", soon(), &Progress::detached()).expect("analysed");
    let r = &a.result;
    assert_eq!((r.codec.as_str(), r.decoder.as_str(), r.sample_rate, r.channels), ("pcm_s16le", "symphonia", 48_000, 2));
    assert_eq!(r.bits_per_sample, Some(16));
    assert!((r.duration_s - 3.0).abs() < 1e-9, "{}", r.duration_s);
    assert_eq!(r.declared_duration_s, None);
    let peak = r.levels.peak_dbfs.expect("not silent");
    assert!((peak + 20.0).abs() < 0.05, "peak {peak}");
    // Gating keeps the silence out, but the 400 ms blocks straddling its edges count.
    let lufs = r.levels.integrated_lufs.expect("gated loudness");
    assert!((-21.0..-20.0).contains(&lufs), "loudness {lufs}");
    let rms = r.levels.rms_dbfs.expect("not silent");
    let expected_rms = -20.0 - 3.01 + 10.0 * (2.0f64 / 3.0).log10();
    assert!((rms - expected_rms).abs() < 0.1, "rms {rms} vs {expected_rms}");
    assert_eq!(r.silence.spans.len(), 1, "{:?}", r.silence);
    let span = r.silence.spans[0];
    assert!((span.start_s - 1.0).abs() <= 0.011 && (span.end_s - 2.0).abs() <= 0.011, "{span:?}");
    // 3 s of 10 ms blocks: 300 buckets, silent in the middle third.
    assert_eq!(a.waveform.peaks.len(), 300);
    assert_eq!(r.waveform_buckets, 300);
    assert!(a.waveform.peaks[150] == 0.0 && (a.waveform.peaks[50] - 0.1).abs() < 0.01);
    assert_eq!(r.bitrate_bps, (r.duration_s.recip() * 8.0 * (44 + 3 * 48_000 * 4) as f64) as u64);
}

#[test]
fn a_steady_stereo_sine_reads_as_loud_as_its_peak_level() {
    // EBU Tech 3341: a stereo 1 kHz sine at -20 dBFS measures -20 LUFS.
    let bytes = Bytes::from(wav(48_000, 2, &sine(48_000, 5.0, 0.1, None), None));
    let r = analyse(bytes, "audio/wav", soon(), &Progress::detached()).expect("analysed").result;
    let lufs = r.levels.integrated_lufs.expect("gated loudness");
    assert!((lufs + 20.0).abs() <= 0.1, "loudness {lufs}");
}

#[test]
fn a_wav_header_promising_more_than_it_has_completes_with_a_warning() {
    let bytes = Bytes::from(wav(8_000, 2, &sine(8_000, 1.0, 0.5, None), Some(80_000)));
    let r = analyse(bytes, "audio/wav", soon(), &Progress::detached()).expect("analysed").result;
    assert!((r.duration_s - 1.0).abs() < 1e-9, "{}", r.duration_s);
    assert_eq!(r.declared_duration_s, Some(10.0));
    assert!(r.warnings.iter().any(|w| w.contains("declares 10.00 s")), "{:?}", r.warnings);
}

#[test]
fn mp3_opus_and_aac_report_codec_duration_and_tags() {
    let dir = tempfile::tempdir().expect("temp dir");
    let source = ["-f", "lavfi", "-i", "sine=frequency=440:duration=5:sample_rate=44100", "-metadata", "title=Prism tone"];
    let cases = [
        ("a.mp3", "audio/mpeg", "mp3", "symphonia", &["-c:a", "libmp3lame", "-b:a", "128k"][..], 44_100),
        ("a.opus", "audio/ogg; codecs=opus", "opus", "opus-pure", &["-c:a", "libopus", "-b:a", "64k"][..], 48_000),
        ("a.m4a", "audio/mp4", "aac", "symphonia", &["-c:a", "aac", "-b:a", "128k"][..], 44_100),
        ("a.flac", "audio/flac", "flac", "symphonia", &["-c:a", "flac"][..], 44_100),
    ];
    for (file, mime, codec, decoder, encode, rate) in cases {
        let mut args = source.to_vec();
        args.extend_from_slice(encode);
        let bytes = ffmpeg(&args, &dir.path().join(file));
        let r = analyse(bytes, mime, soon(), &Progress::detached()).unwrap_or_else(|e| panic!("{file}: {e}")).result;
        assert_eq!((r.codec.as_str(), r.decoder.as_str(), r.sample_rate, r.channels), (codec, decoder, rate, 1), "{file}");
        assert!((r.duration_s - 5.0).abs() < 0.05, "{file}: {} s", r.duration_s);
        assert_eq!(r.tags.get("title").map(String::as_str), Some("Prism tone"), "{file}: {:?}", r.tags);
        // The levels agree with ffmpeg's own measurement of the same file.
        let (peak, rms) = ffmpeg_levels(&dir.path().join(file));
        let (our_peak, our_rms) = (r.levels.peak_dbfs.expect("not silent"), r.levels.rms_dbfs.expect("not silent"));
        assert!((our_peak - peak).abs() < 0.1 && (our_rms - rms).abs() < 0.1, "{file}: {our_peak}/{our_rms} vs ffmpeg {peak}/{rms}");
        assert!(r.silence.spans.is_empty(), "{file}: {:?}", r.silence);
    }
}

#[test]
fn ogg_opus_comes_out_at_its_exact_length_and_surround_goes_to_ffmpeg() {
    let dir = tempfile::tempdir().expect("temp dir");
    // 5.01 s is not a whole number of 20 ms frames: the end is padded, and
    // the last page's granule says by how much.
    let source = ["-f", "lavfi", "-i", "sine=frequency=1000:duration=5.01:sample_rate=48000"];
    let stereo = ffmpeg(&[&source[..], &["-ac", "2", "-c:a", "libopus", "-b:a", "96k"]].concat(), &dir.path().join("s.opus"));
    let r = analyse(stereo.clone(), "audio/ogg", soon(), &Progress::detached()).expect("analysed").result;
    assert_eq!((r.decoder.as_str(), r.channels, r.sample_rate), ("opus-pure", 2, 48_000));
    // Pre-skip dropped at the start, padding at the end: exactly the samples encoded.
    assert_eq!((r.duration_s * 48_000.0).round(), 5.01 * 48_000.0, "{} s", r.duration_s);
    assert_eq!(r.declared_duration_s, None, "{:?}", r.warnings);
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);

    // Cut mid-page: the pages before the cut are kept (ffmpeg writes a page a
    // second), with a warning.
    let cut = analyse(stereo.slice(..stereo.len() / 2), "audio/ogg", soon(), &Progress::detached()).expect("half plays").result;
    assert!(cut.duration_s > 1.4 && cut.duration_s <= 2.6, "{} s", cut.duration_s);
    assert!(cut.warnings.iter().any(|w| w.contains("damaged part")), "{:?}", cut.warnings);

    let surround = ffmpeg(&[&source[..], &["-ac", "6", "-c:a", "libopus", "-mapping_family", "1"]].concat(), &dir.path().join("6.opus"));
    let r = analyse(surround, "audio/ogg", soon(), &Progress::detached()).expect("analysed").result;
    assert_eq!((r.decoder.as_str(), r.channels), ("ffmpeg", 6));
    assert!((r.duration_s - 5.01).abs() < 0.01, "{} s", r.duration_s);
}

#[test]
fn every_opus_mode_decodes_to_ffmpegs_levels_and_the_exact_length() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A wobbling tone with a little noise: something for SILK and CELT alike.
    let source = ["-f", "lavfi", "-i", "aevalsrc=0.3*sin(2*PI*180*t)*sin(2*PI*3*t)+0.05*random(0):s=48000:d=3"];
    let modes: [(&str, &[&str]); 5] = [
        ("silk", &["-application", "voip", "-b:a", "12k", "-ac", "1"]),
        ("hybrid", &["-b:a", "24k", "-ac", "1"]),
        ("celt-2.5ms", &["-frame_duration", "2.5", "-b:a", "128k"]),
        ("celt-120ms", &["-frame_duration", "120", "-b:a", "64k"]),
        ("celt-cbr-stereo", &["-vbr", "off", "-b:a", "48k", "-ac", "2"]),
    ];
    for (mode, encode) in modes {
        let path = dir.path().join(format!("{mode}.opus"));
        let bytes = ffmpeg(&[&source[..], encode, &["-c:a", "libopus"]].concat(), &path);
        let r = analyse(bytes, "audio/ogg", soon(), &Progress::detached()).unwrap_or_else(|e| panic!("{mode}: {e}")).result;
        assert_eq!(r.decoder, "opus-pure", "{mode}");
        assert_eq!((r.duration_s * 48_000.0).round(), 3.0 * 48_000.0, "{mode}: {} s", r.duration_s);
        let (peak, rms) = ffmpeg_levels(&path);
        let (our_peak, our_rms) = (r.levels.peak_dbfs.expect("not silent"), r.levels.rms_dbfs.expect("not silent"));
        // ffmpeg has its own Opus decoder: SILK peaks differ by a few hundredths of a dB.
        assert!((our_peak - peak).abs() < 0.15 && (our_rms - rms).abs() < 0.05, "{mode}: {our_peak}/{our_rms} vs ffmpeg {peak}/{rms}");
    }
}

#[test]
fn a_damaged_opus_packet_is_concealed_and_the_length_kept() {
    use opus_pure::{OggOpusReader, OggOpusWriter};

    let dir = tempfile::tempdir().expect("temp dir");
    let source = ["-f", "lavfi", "-i", "sine=frequency=440:duration=2:sample_rate=48000", "-c:a", "libopus"];
    let clean = ffmpeg(&source, &dir.path().join("c.opus"));
    // Rewrite the stream (valid pages and checksums) with packet 40 garbled:
    // a code-3 packet whose frame count byte is missing.
    let mut reader = OggOpusReader::new(std::io::Cursor::new(clean.to_vec())).expect("Ogg Opus");
    let mut writer = OggOpusWriter::new(Vec::new(), reader.head().clone()).expect("writer");
    let mut packets = 0;
    for (i, packet) in reader.packets().enumerate() {
        let packet = packet.expect("packet");
        packets += 1;
        let data = if i == 40 { vec![0x03] } else { packet.data };
        writer.write_packet_with_duration(&data, 960).expect("written");
    }
    let damaged = Bytes::from(writer.finish().expect("finished"));
    let r = analyse(damaged, "audio/ogg", soon(), &Progress::detached()).expect("analysed").result;
    assert!(r.warnings.iter().any(|w| w.starts_with("1 of ") && w.contains("concealed")), "{:?}", r.warnings);
    // Every packet's 20 ms less the 312-sample pre-skip (the rewrite keeps no end-trim).
    assert_eq!((r.duration_s * 48_000.0).round(), f64::from(packets * 960 - 312), "{} s", r.duration_s);
}

#[test]
fn truncated_and_foreign_files_end_cleanly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let source = ["-f", "lavfi", "-i", "sine=duration=4"];
    let mp3 = ffmpeg(&[&source[..], &["-c:a", "libmp3lame"]].concat(), &dir.path().join("t.mp3"));
    let half = mp3.slice(..mp3.len() / 2);
    let r = analyse(half, "audio/mpeg", soon(), &Progress::detached()).expect("half an MP3 still plays").result;
    assert!((r.duration_s - 2.0).abs() < 0.2, "{}", r.duration_s);

    // MP4 keeps its index at the end: cut off, nothing is playable.
    let m4a = ffmpeg(&[&source[..], &["-c:a", "aac"]].concat(), &dir.path().join("t.m4a"));
    let cut = m4a.slice(..m4a.len() * 3 / 4);
    let e = analyse(cut, "audio/mp4", soon(), &Progress::detached()).expect_err("no index");
    assert!(matches!(e, AudioError::Corrupt(_) | AudioError::Unsupported(_)), "{e:?}");

    let e = analyse(Bytes::from_static(&[0x55; 4096]), "audio/mpeg", soon(), &Progress::detached()).expect_err("not audio");
    assert!(matches!(e, AudioError::Unsupported(_) | AudioError::Corrupt(_)), "{e:?}");
}

#[test]
fn decoding_stops_at_the_deadline() {
    let bytes = Bytes::from(wav(48_000, 2, &sine(48_000, 60.0, 0.5, None), None));
    let e = analyse(bytes, "audio/wav", Instant::now(), &Progress::detached()).expect_err("past the deadline");
    assert_eq!(e.code(), "deadline_exceeded");
}

#[tokio::test]
async fn the_handler_completes_the_job_with_a_waveform_output() {
    use std::sync::Arc;

    use aws_lambda_events::sqs::SqsEvent;
    use prism_shared::JobStatus;
    use prism_shared::domain::results::{JobResult, Waveform};
    use prism_shared::ports::JobStore;
    use prism_shared::testing::memory::{MemoryBlobStore, MemoryJobStore};
    use prism_shared::testing::{memory_deps, phases, queued_job, sample_event};
    use process_audio::{Config, handle};

    let event: SqsEvent = sample_event("sqs-process-audio-command.json");
    let (jobs, blobs) = (Arc::new(MemoryJobStore::default()), Arc::new(MemoryBlobStore::default()));
    let (id, upload) = queued_job(jobs.as_ref(), "0196f0a0-0000-7000-8000-0000000a0d10", "tone.mp3").await;
    // Content, not the name, decides: the "mp3" is a WAV.
    blobs.insert(&upload, wav(16_000, 2, &sine(16_000, 2.0, 0.25, None), None));
    let deps = memory_deps(jobs.clone(), blobs.clone(), Config { max_bytes: 10 * 1024 * 1024, deadline: Duration::from_secs(30) });
    assert!(handle(&deps, event).await.batch_item_failures.is_empty());
    let job = jobs.get(&id).await.expect("get").expect("job");
    assert_eq!(job.status, JobStatus::Completed, "{:?}", job.error);
    let Some(JobResult::Audio(result)) = &job.result else { panic!("not an audio result: {:?}", job.result) };
    assert!((result.duration_s - 2.0).abs() < 1e-9);
    assert_eq!(job.outputs.len(), 1);
    assert_eq!(job.outputs[0].uri.key, format!("outputs/{id}/waveform.json"));
    let (body, content_type) = blobs.object(&job.outputs[0].uri).expect("written");
    assert_eq!(content_type, "application/json");
    let waveform: Waveform = serde_json::from_slice(&body).expect("waveform JSON");
    assert_eq!(waveform.peaks.len(), 200);
    let phases = phases(jobs.as_ref(), &id).await;
    assert_eq!(phases.first().map(String::as_str), Some("reading"));
    assert_eq!(phases.last().map(String::as_str), Some("writing waveform"));
}
