//! The processors against the tools a user would otherwise reach for, on a
//! corpus made at run time (ffmpeg's synthetic sources, manual pages typeset
//! by groff, the PDFs Debian ships), each side as a separate process per
//! file, best of three:
//!
//! * audio: `prism analyse` (decode + levels, loudness, waveform, silence)
//!   against `ffmpeg -threads 1 -i F -f null -` (decode only), per codec;
//! * documents: pages per second of `prism analyse` (text of every page plus
//!   the preview) against `pdftotext`, and how many of the PDFs pdftotext
//!   reads prism reads too;
//! * video thumbnails: prism's keyframe contact sheet (and poster) against a
//!   naive contact sheet that decodes every frame through an `fps=` filter.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::Context;

/// Wall time of a command, and whether it succeeded.
fn wall(cmd: &mut Command) -> anyhow::Result<(f64, bool)> {
    let started = Instant::now();
    let out = cmd.output().with_context(|| format!("running {:?}", cmd.get_program()))?;
    Ok((started.elapsed().as_secs_f64(), out.status.success()))
}

/// Wall and CPU (user + system) seconds of a command that must succeed.
fn cpu_timed(cmd: &mut Command) -> anyhow::Result<(f64, f64)> {
    let mut timed = Command::new("/usr/bin/time");
    timed.arg("-f").arg("PRISM_TIME %e %U %S").arg(cmd.get_program()).args(cmd.get_args());
    let out = timed.stdout(std::process::Stdio::null()).output().context("running /usr/bin/time")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(out.status.success(), "{:?} failed: {stderr}", cmd.get_program());
    let line = stderr.lines().rev().find_map(|l| l.strip_prefix("PRISM_TIME ")).context("no timing from /usr/bin/time")?;
    let numbers: Vec<f64> = line.split_whitespace().map(str::parse).collect::<Result<_, _>>()?;
    anyhow::ensure!(numbers.len() == 3, "unexpected timing line {line:?}");
    Ok((numbers[0], numbers[1] + numbers[2]))
}

/// The best of three runs of `make()`, which must succeed.
fn best_of_three(mut make: impl FnMut() -> Command) -> anyhow::Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let mut cmd = make();
        let (secs, ok) = wall(&mut cmd)?;
        anyhow::ensure!(ok, "{cmd:?} failed");
        best = best.min(secs);
    }
    Ok(best)
}

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
        let (mut ours, mut reference) = ((f64::INFINITY, 0.0), (f64::INFINITY, 0.0));
        for _ in 0..AUDIO_RUNS {
            let run = cpu_timed(Command::new(prism_exe).arg("analyse").arg(&path))?;
            ours = if run.0 < ours.0 { run } else { ours };
            let mut decode = Command::new("ffmpeg");
            decode.args(["-hide_banner", "-v", "error", "-threads", "1", "-i"]).arg(&path).args(["-f", "null", "-"]);
            let run = cpu_timed(&mut decode)?;
            reference = if run.0 < reference.0 { run } else { reference };
        }
        writeln!(
            out,
            "| {codec} | {:.0} ms | {:.0} ms | {:.2}x | {:.0} ms | {:.0} ms | {:.2}x |",
            ours.0 * 1e3,
            reference.0 * 1e3,
            ours.0 / reference.0,
            ours.1 * 1e3,
            reference.1 * 1e3,
            ours.1 / reference.1
        )?;
    }
    writeln!(out, "\nGoal: <= 1.1x ffmpeg's time per codec.\n")?;
    Ok(())
}

/// Manual pages typeset as PDFs, plus the PDFs Debian's documentation ships.
fn pdf_corpus(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut pages: Vec<PathBuf> = std::fs::read_dir("/usr/share/man/man1")?.flatten().map(|e| e.path()).collect();
    pages.sort();
    let mut files = Vec::new();
    for page in pages.iter().take(60) {
        let name = page.file_name().unwrap_or_default().to_string_lossy().split(".1").next().unwrap_or("page").to_owned();
        let pdf = dir.join(format!("{name}.pdf"));
        if !pdf.exists() {
            let script = format!("zcat -f '{}' | groff -Tpdf -man -P-pa4 > '{}' 2>/dev/null", page.display(), pdf.display());
            if !Command::new("sh").args(["-c", &script]).status()?.success() {
                continue;
            }
        }
        files.push(pdf);
    }
    for shipped in std::fs::read_dir("/usr/share/doc")?.flatten().flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
    {
        let path = shipped.path();
        if path.extension().is_some_and(|e| e == "pdf") {
            files.push(path);
        }
    }
    Ok(files)
}

fn pdf_pages(path: &Path) -> Option<u64> {
    let out = Command::new("pdfinfo").arg(path).output().ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| l.strip_prefix("Pages:")?.trim().parse().ok())
}

pub fn documents(scratch: &Path, prism_exe: &Path, out: &mut String) -> anyhow::Result<()> {
    let files = pdf_corpus(&scratch.join("pdfs"))?;
    // What pdftotext handles is the baseline; each tool's time is its best of three passes.
    let mut handled = Vec::new();
    let mut poppler = f64::INFINITY;
    for round in 0..3 {
        let mut total = 0.0;
        for path in &files {
            let (secs, ok) = wall(Command::new("pdftotext").arg("-q").arg(path).arg("/dev/null"))?;
            total += secs;
            if round == 0 && ok {
                handled.push(path.clone());
            }
        }
        poppler = poppler.min(total);
    }
    let pages: u64 = handled.iter().filter_map(|p| pdf_pages(p)).sum();
    let prism = |extra: &[&str]| -> anyhow::Result<(f64, usize)> {
        let (mut best, mut read) = (f64::INFINITY, 0);
        for _ in 0..3 {
            let (mut total, mut ok) = (0.0, 0);
            for path in &handled {
                let (secs, success) = wall(Command::new(prism_exe).arg("analyse").args(extra).arg(path))?;
                total += secs;
                ok += usize::from(success);
            }
            (best, read) = (best.min(total), ok);
        }
        Ok((best, read))
    };
    let (text_only, read) = prism(&["--no-preview"])?;
    let (with_preview, _) = prism(&[])?;
    let rate = |secs: f64| pages as f64 / secs;
    let poppler_rate = rate(poppler);
    writeln!(out, "## PDF text\n")?;
    writeln!(
        out,
        "{} PDFs pdftotext reads ({} manual pages typeset by groff, the rest shipped by Debian), {pages} pages; \
         a process per file, one thread, best of 3.\n",
        handled.len(),
        handled.iter().filter(|p| p.starts_with(scratch)).count()
    )?;
    writeln!(out, "| tool | pages/s | vs pdftotext | PDFs read without error |\n|---|---:|---:|---:|")?;
    let share = format!("{read}/{} ({:.0}%)", handled.len(), 100.0 * read as f64 / handled.len().max(1) as f64);
    writeln!(out, "| prism text (pdf_oxide) | {:.0} | {:.2}x | {share} |", rate(text_only), rate(text_only) / poppler_rate)?;
    writeln!(out, "| prism text + first-page preview | {:.0} | {:.2}x | |", rate(with_preview), rate(with_preview) / poppler_rate)?;
    writeln!(out, "| pdftotext (poppler, reference) | {poppler_rate:.0} | 1.00x | {0}/{0} |", handled.len())?;
    writeln!(out, "\nGoals: >= 0.5x pdftotext's pages/s; >= 95% of the PDFs it reads.\n")?;
    Ok(())
}

pub fn video(scratch: &Path, prism_exe: &Path, out: &mut String) -> anyhow::Result<()> {
    let dir = scratch.join("video");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("movie.mp4");
    let (seconds, width, height) = (120, 1280, 720);
    let source = format!("testsrc2=size={width}x{height}:rate=25:duration={seconds}");
    ffmpeg(&path, &["-f", "lavfi", "-i", &source, "-c:v", "libx264", "-preset", "veryfast", "-g", "50", "-pix_fmt", "yuv420p"])?;
    let sheet = dir.join("naive-sheet.jpg");
    let ours = best_of_three(|| {
        let mut c = Command::new(prism_exe);
        c.arg("analyse").arg(&path);
        c
    })?;
    // The same 4x3 sheet of 320 px tiles, by decoding everything and keeping one frame in ten
    // seconds. Both sides use ffmpeg's default threading.
    let naive = best_of_three(|| {
        let mut c = Command::new("ffmpeg");
        c.args(["-hide_banner", "-v", "error", "-y", "-i"]).arg(&path);
        c.args(["-vf", &format!("fps=12/{seconds},scale=320:-2,tile=4x3"), "-frames:v", "1"]).arg(&sheet);
        c
    })?;
    writeln!(out, "## Video thumbnails\n")?;
    writeln!(
        out,
        "{seconds} s of {width}x{height} H.264 at 25 fps, a keyframe every 2 s; a 4x3 contact sheet of 320 px tiles, best of 3.\n"
    )?;
    writeln!(out, "| method | time | speed-up |\n|---|---:|---:|")?;
    writeln!(
        out,
        "| prism: probe, then poster and 12 keyframes by seeking before the input (two ffmpeg runs side by side) | {:.0} ms | {:.1}x |",
        ours * 1e3,
        naive / ours
    )?;
    writeln!(out, "| naive: decode every frame through `fps=` and `tile` | {:.0} ms | 1.0x |", naive * 1e3)?;
    writeln!(out, "\nGoal: >= 10x faster than the naive full decode.\n")?;
    Ok(())
}
