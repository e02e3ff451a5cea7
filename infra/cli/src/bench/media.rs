//! The processors against the tools a user would otherwise reach for, on a
//! corpus made at run time (ffmpeg's synthetic sources, manual pages typeset
//! by groff, the PDFs Debian ships), each side as a separate process per
//! file, best of three:
//!
//! * audio: `prism analyse` (decode + levels, loudness, waveform, silence)
//!   against `ffmpeg -threads 1 -i F -f null -` (decode only), per codec;
//! * video thumbnails, per container and codec: prism's keyframe contact
//!   sheet (and poster) against a naive contact sheet that decodes every
//!   frame through an `fps=` filter.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use super::timing::{Run, best, measure};

fn ffmpeg(out: &Path, args: &[&str]) -> anyhow::Result<()> {
    if out.exists() {
        return Ok(());
    }
    let status = Command::new("ffmpeg").args(["-hide_banner", "-v", "error", "-y"]).args(args).arg(out).status()?;
    anyhow::ensure!(status.success(), "ffmpeg could not make {}", out.display());
    Ok(())
}

/// Runs of each side per audio file: the best of many, because a short run on
/// a shared VM varies by ±15% from one to the next.
const AUDIO_RUNS: usize = 9;

/// Three minutes of stereo "music" (a chord over pink noise, with a pause)
/// in each codec the classifier sends to process-audio.
pub fn audio(scratch: &Path, prism_exe: &Path, out: &mut String) -> anyhow::Result<()> {
    let dir = scratch.join("audio");
    std::fs::create_dir_all(&dir)?;
    let source = "aevalsrc=0.2*sin(2*PI*220*t)+0.15*sin(2*PI*277*t)+0.1*sin(2*PI*330*t)*lt(mod(t\\,30)\\,27):s=44100:d=180:c=stereo";
    let noise = "anoisesrc=color=pink:amplitude=0.05:d=180:r=44100";
    let mix = [
        "-f",
        "lavfi",
        "-i",
        source,
        "-f",
        "lavfi",
        "-i",
        noise,
        "-filter_complex",
        "[0][1]amix=inputs=2:normalize=0,aformat=channel_layouts=stereo",
    ];
    let codecs: [(&str, &str, &[&str]); 6] = [
        ("mp3", "music.mp3", &["-c:a", "libmp3lame", "-b:a", "192k"]),
        ("aac", "music.m4a", &["-c:a", "aac", "-b:a", "192k"]),
        ("flac", "music.flac", &["-c:a", "flac"]),
        ("vorbis", "music.ogg", &["-c:a", "libvorbis", "-q:a", "5"]),
        ("opus", "music.opus", &["-c:a", "libopus", "-b:a", "128k"]),
        ("pcm (wav)", "music.wav", &["-c:a", "pcm_s16le"]),
    ];
    writeln!(out, "## Audio decode and analysis\n")?;
    writeln!(
        out,
        "3 min stereo 44.1 kHz per codec. prism = `prism analyse` (decode, peak/RMS, EBU R128, waveform, silence; \
         decoding and measuring on two threads); reference = `ffmpeg -threads 1 -i F -f null -` (decode only). \
         Each a process per file, run alternately, best of {AUDIO_RUNS} by wall time; CPU is user + system time of that run.\n"
    )?;
    writeln!(
        out,
        "| codec | prism wall | ffmpeg wall | wall ratio | prism CPU | ffmpeg CPU | CPU ratio |\n|---|---:|---:|---:|---:|---:|---:|"
    )?;
    for (codec, file, args) in codecs {
        let path = dir.join(file);
        ffmpeg(&path, &[&mix[..], args].concat())?;
        // Alternately, so both sides meet the same moments of a shared VM.
        let (mut ours, mut reference): (Option<Run>, Option<Run>) = (None, None);
        let faster = |best: Option<Run>, run: Run| Some(best.filter(|b| b.wall <= run.wall).unwrap_or(run));
        for _ in 0..AUDIO_RUNS {
            ours = faster(ours, measure(Command::new(prism_exe).arg("analyse").arg(&path))?);
            let mut decode = Command::new("ffmpeg");
            decode.args(["-hide_banner", "-v", "error", "-threads", "1", "-i"]).arg(&path).args(["-f", "null", "-"]);
            reference = faster(reference, measure(&mut decode)?);
        }
        let (Some(ours), Some(reference)) = (ours, reference) else { anyhow::bail!("no audio runs") };
        writeln!(
            out,
            "| {codec} | {:.0} ms | {:.0} ms | {:.2}x | {:.0} ms | {:.0} ms | {:.2}x |",
            ours.wall * 1e3,
            reference.wall * 1e3,
            ours.wall / reference.wall,
            ours.cpu * 1e3,
            reference.cpu * 1e3,
            ours.cpu / reference.cpu
        )?;
    }
    writeln!(out, "\nGoal: <= 1.1x ffmpeg's time per codec.\n")?;
    Ok(())
}

/// A video format of the benchmark: its container and codec, and the ffmpeg
/// arguments that encode the test picture into it.
struct VideoFormat {
    name: &'static str,
    file: &'static str,
    pixel_format: &'static str,
    encode: &'static [&'static str],
}

/// Every container and codec measured: a keyframe every 2 s where the codec
/// has inter frames (ProRes has only key frames).
const VIDEO_FORMATS: &[VideoFormat] = &[
    VideoFormat {
        name: "MP4 / H.264",
        file: "h264.mp4",
        pixel_format: "yuv420p",
        encode: &["-c:v", "libx264", "-preset", "veryfast", "-g", "50"],
    },
    VideoFormat {
        name: "MP4 / H.265",
        file: "h265.mp4",
        pixel_format: "yuv420p",
        encode: &["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "keyint=50:log-level=error", "-tag:v", "hvc1"],
    },
    VideoFormat {
        name: "Matroska / H.264",
        file: "h264.mkv",
        pixel_format: "yuv420p",
        encode: &["-c:v", "libx264", "-preset", "veryfast", "-g", "50"],
    },
    VideoFormat {
        name: "WebM / VP9",
        file: "vp9.webm",
        pixel_format: "yuv420p",
        encode: &["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-row-mt", "1", "-b:v", "2M", "-g", "50"],
    },
    VideoFormat {
        name: "WebM / AV1",
        file: "av1.webm",
        pixel_format: "yuv420p",
        encode: &["-c:v", "libsvtav1", "-preset", "12", "-g", "50"],
    },
    VideoFormat {
        name: "QuickTime / ProRes 422 Proxy",
        file: "prores.mov",
        pixel_format: "yuv422p10le",
        encode: &["-c:v", "prores_ks", "-profile:v", "0"],
    },
    VideoFormat {
        name: "AVI / MPEG-4 Part 2",
        file: "mpeg4.avi",
        pixel_format: "yuv420p",
        encode: &["-c:v", "mpeg4", "-q:v", "5", "-g", "50"],
    },
    VideoFormat {
        name: "MPEG-TS / MPEG-2",
        file: "mpeg2.ts",
        pixel_format: "yuv420p",
        encode: &["-c:v", "mpeg2video", "-q:v", "5", "-g", "50"],
    },
];

pub fn video(scratch: &Path, prism_exe: &Path, out: &mut String) -> anyhow::Result<()> {
    let dir = scratch.join("video");
    std::fs::create_dir_all(&dir)?;
    let (seconds, width, height) = (120, 1280, 720);
    let source = format!("testsrc2=size={width}x{height}:rate=25:duration={seconds}");
    writeln!(out, "## Video thumbnails\n")?;
    writeln!(
        out,
        "Per container and codec, {seconds} s of {width}x{height} at 25 fps (ffmpeg's `testsrc2`), a keyframe every 2 s: \
         prism's poster and 4x3 contact sheet of 320 px tiles (`prism analyse`) against a naive sheet that decodes \
         every frame through `fps=` and `tile` (ffmpeg's default threading on both sides), best of 3 by wall time; \
         CPU is user + system time, memory the largest peak among the process and the ffmpeg runs it waits for.\n"
    )?;
    writeln!(
        out,
        "| format | prism | naive | speed-up | prism CPU | naive CPU | CPU saved | prism peak | naive peak | goal (>= 10x) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    )?;
    for format in VIDEO_FORMATS {
        let path = dir.join(format.file);
        ffmpeg(&path, &[&["-f", "lavfi", "-i", source.as_str(), "-pix_fmt", format.pixel_format], format.encode].concat())?;
        let ours = best(|| {
            let mut c = Command::new(prism_exe);
            c.arg("analyse").arg(&path);
            c
        });
        let ours = match ours {
            Ok(run) => run,
            Err(e) => {
                writeln!(out, "| {} | failed: {} | | | | | | | | missed |", format.name, e.to_string().lines().next().unwrap_or_default())?;
                continue;
            }
        };
        let sheet = dir.join(format!("naive-{}.jpg", format.file.replace('.', "-")));
        let naive = best(|| {
            let mut c = Command::new("ffmpeg");
            c.args(["-hide_banner", "-v", "error", "-y", "-i"]).arg(&path);
            c.args(["-vf", &format!("fps=12/{seconds},scale=320:-2,tile=4x3"), "-frames:v", "1"]).arg(&sheet);
            c
        })?;
        let speed_up = naive.wall / ours.wall;
        let goal = if speed_up >= 10.0 { "met".to_owned() } else { format!("missed: {speed_up:.1}x") };
        writeln!(
            out,
            "| {} | {:.0} ms | {:.0} ms | {speed_up:.1}x | {:.0} ms | {:.0} ms | {:.1}x | {:.0} MB | {:.0} MB | {goal} |",
            format.name,
            ours.wall * 1e3,
            naive.wall * 1e3,
            ours.cpu * 1e3,
            naive.cpu * 1e3,
            naive.cpu / ours.cpu,
            ours.peak_mb,
            naive.peak_mb,
        )?;
    }
    writeln!(out, "\nGoal: >= 10x faster than the naive full decode, per format.\n")?;
    Ok(())
}
