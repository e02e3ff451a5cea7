//! Thumbnails per format: `prism thumbnail` (process-image's decode,
//! orientation, resize and encode, on one thread) against `vipsthumbnail`
//! (libvips, one thread), the same files in the same run. Each tool runs as
//! one process over a format's files, best of three by wall time; CPU is
//! user + system time and memory the process's peak resident set.
//!
//! The corpus is made at run time from generated photo-like pictures, turned
//! into each format by ImageMagick (kept under the scratch folder, so later
//! runs reuse it).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use super::timing::best;

/// The thumbnail's longest edge.
const SIZE: &str = "256";
/// Pictures per format (each its own seed).
const FILES: u64 = 3;
/// Goals per format: at most libvips' time and memory.
const TIME_GOAL: f64 = 1.0;
const MEMORY_GOAL: f64 = 1.0;

/// One format of the corpus: ImageMagick's options and output prefix that
/// make it from a PNG, and the source's size.
struct Format {
    name: &'static str,
    file: &'static str,
    options: &'static [&'static str],
    /// ImageMagick's coder for the output (`PNG48:` for 16-bit, …).
    coder: &'static str,
    /// Animated formats are made from this many smaller frames.
    frames: u32,
}

const FORMATS: &[Format] = &[
    Format { name: "JPEG (quality 90)", file: "jpg", options: &["-quality", "90"], coder: "JPG", frames: 1 },
    Format { name: "PNG 8-bit RGB", file: "rgb.png", options: &[], coder: "PNG24", frames: 1 },
    Format { name: "PNG 16-bit RGB", file: "rgb16.png", options: &["-depth", "16"], coder: "PNG48", frames: 1 },
    Format { name: "PNG palette (256 colours)", file: "palette.png", options: &["-colors", "256"], coder: "PNG8", frames: 1 },
    Format {
        name: "PNG RGBA (alpha)",
        file: "rgba.png",
        options: &["-alpha", "set", "-channel", "A", "-evaluate", "set", "75%", "+channel"],
        coder: "PNG32",
        frames: 1,
    },
    Format { name: "WebP lossy (quality 80)", file: "lossy.webp", options: &["-quality", "80"], coder: "WEBP", frames: 1 },
    Format {
        name: "WebP lossless",
        file: "lossless.webp",
        options: &["-define", "webp:lossless=true", "-define", "webp:method=0"],
        coder: "WEBP",
        frames: 1,
    },
    Format { name: "GIF (animated, 8 frames of 800x600)", file: "gif", options: &["-delay", "10", "-loop", "0"], coder: "GIF", frames: 8 },
    Format { name: "TIFF (LZW)", file: "tif", options: &["-compress", "lzw"], coder: "TIFF", frames: 1 },
    Format { name: "BMP (24-bit)", file: "bmp", options: &["-type", "truecolor"], coder: "BMP3", frames: 1 },
];

/// A photo-like picture: smooth gradients with fine noise, so it compresses
/// like a camera image rather than a flat test card.
fn photo(width: u32, height: u32, seed: u64) -> image::RgbImage {
    let mut rng = fastrand::Rng::with_seed(seed);
    image::RgbImage::from_fn(width, height, |x, y| {
        let n = rng.i32(-12..12);
        let c = |v: u32| u8::try_from((v as i32 + n).clamp(0, 255)).unwrap_or(0);
        image::Rgb([c(x * 255 / width), c(y * 255 / height), c((x + y) * 127 / (width + height) + 64)])
    })
}

/// A PNG made once: `photo(width, height, seed)`.
fn source(dir: &Path, width: u32, height: u32, seed: u64) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("source-{width}x{height}-{seed}.png"));
    if !path.exists() {
        photo(width, height, seed).save(&path)?;
    }
    Ok(path)
}

/// The format's files, made with ImageMagick where missing.
fn corpus(dir: &Path, format: &Format) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for i in 0..FILES {
        let path = dir.join(format!("{i}.{}", format.file));
        if !path.exists() {
            let mut convert = Command::new("convert");
            if format.frames > 1 {
                convert.args(format.options);
                for frame in 0..format.frames {
                    convert.arg(source(dir, 800, 600, 100 * i + u64::from(frame))?);
                }
            } else {
                convert.arg(source(dir, 3000, 2000, i)?).args(format.options);
            }
            let made = convert.arg(format!("{}:{}", format.coder, path.display())).status().context("running ImageMagick's convert")?;
            anyhow::ensure!(made.success(), "ImageMagick could not make {}", path.display());
        }
        files.push(path);
    }
    Ok(files)
}

pub fn thumbnails(scratch: &Path, prism_exe: &Path, out: &mut String) -> anyhow::Result<()> {
    let corpus_dir = scratch.join("images");
    let outputs = scratch.join("thumbnails");
    std::fs::create_dir_all(&corpus_dir)?;
    writeln!(out, "## Thumbnails\n")?;
    writeln!(
        out,
        "{FILES} pictures per format (3000x2000 photo-like, made by ImageMagick from generated PNGs) to {SIZE} px; \
         `prism thumbnail` against `vipsthumbnail` (libvips, `VIPS_CONCURRENCY=1`), one process over each format's files, \
         best of 3 by wall time; CPU is user + system.\n"
    )?;
    writeln!(
        out,
        "| format | prism wall | libvips wall | time vs libvips | CPU vs libvips | prism peak | libvips peak | memory vs libvips | goals |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---|")?;
    let mut missed = Vec::new();
    for format in FORMATS {
        let files = corpus(&corpus_dir, format)?;
        let (prism_out, vips_out) = (outputs.join("prism").join(format.file), outputs.join("vips").join(format.file));
        std::fs::create_dir_all(&prism_out)?;
        std::fs::create_dir_all(&vips_out)?;
        let prism = best(|| {
            let mut c = Command::new(prism_exe);
            c.args(["thumbnail", "--size", SIZE, "--out"]).arg(&prism_out).args(&files);
            c
        })?;
        let vips = best(|| {
            let mut c = Command::new("vipsthumbnail");
            c.env("VIPS_CONCURRENCY", "1").args(["--size", SIZE, "-o"]).arg(vips_out.join("%s.jpg")).args(&files);
            c
        });
        let ms = |s: f64| format!("{:.0} ms", s * 1e3 / FILES as f64);
        match vips {
            Ok(vips) => {
                let (time, cpu, memory) = (prism.wall / vips.wall, prism.cpu / vips.cpu.max(1e-3), prism.peak_mb / vips.peak_mb);
                let met = time <= TIME_GOAL && memory <= MEMORY_GOAL;
                let verdict = match (time <= TIME_GOAL, memory <= MEMORY_GOAL) {
                    (true, true) => "met".to_owned(),
                    (false, true) => format!("time missed by {:.0}%", (time - 1.0) * 100.0),
                    (true, false) => format!("memory missed by {:.0}%", (memory - 1.0) * 100.0),
                    (false, false) => format!("both missed ({:.0}%, {:.0}%)", (time - 1.0) * 100.0, (memory - 1.0) * 100.0),
                };
                if !met {
                    missed.push(format.name);
                }
                writeln!(
                    out,
                    "| {} | {} | {} | {time:.2}x | {cpu:.2}x | {:.0} MB | {:.0} MB | {memory:.2}x | {verdict} |",
                    format.name,
                    ms(prism.wall),
                    ms(vips.wall),
                    prism.peak_mb,
                    vips.peak_mb
                )?;
            }
            Err(e) => {
                let why = e.to_string().lines().next().unwrap_or_default().replace('|', "/");
                writeln!(out, "| {} | {} | (libvips failed: {why}) | | | {:.0} MB | | | |", format.name, ms(prism.wall), prism.peak_mb)?;
            }
        }
    }
    let verdict = if missed.is_empty() { "met for every format".to_owned() } else { format!("missed for {}", missed.join("; ")) };
    writeln!(out, "\nTimes are per picture. Goals: time <= {TIME_GOAL}x and peak memory <= {MEMORY_GOAL}x libvips': {verdict}.\n")?;
    Ok(())
}
