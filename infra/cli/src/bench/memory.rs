//! Memory at the limits: each processor on the largest input of each format
//! its limits let through (image: 100 megapixels and 100 MiB; document: 5,000
//! pages and 200 MiB; audio: 500 MiB; video: a 16,384-pixel side at the
//! widest aspect), against the `MemorySize` template.yaml gives its function.
//!
//! The peak is the process tree's, as the local cloud's watchdog and Lambda
//! count it: `prism analyse` (the processor's own code, in process) plus the
//! ffmpeg runs it starts, summed while they run side by side.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use prism_cloud::template::Template;

/// One input at a limit: which function's memory it is held to, and how it is made.
struct Case {
    function: &'static str,
    format: &'static str,
    file: &'static str,
    make: Make,
    /// The function's worst case in the benchmark: the test holds the
    /// processor to its MemorySize on it.
    worst: bool,
}

enum Make {
    /// `ffmpeg -y …args FILE`.
    Ffmpeg(&'static [&'static str]),
    /// ImageMagick `convert` of an ffmpeg picture: `(ffmpeg source, convert args)`.
    Convert(&'static str, &'static [&'static str]),
    /// A PDF written by [`super::documents`].
    Pdf(fn(&Path) -> anyhow::Result<()>),
}

const TEST_PICTURE: &str = "testsrc2=size=10000x10000";

// Kept as written: rustfmt would stand each ffmpeg argument on a line of its own.
#[rustfmt::skip]
const CASES: &[Case] = &[
    Case {
        function: "ProcessImageFunction",
        format: "JPEG 10000x10000",
        file: "limit.jpg",
        worst: false,
        make: Make::Ffmpeg(&["-f", "lavfi", "-i", TEST_PICTURE, "-frames:v", "1", "-q:v", "3"]),
    },
    Case {
        function: "ProcessImageFunction",
        format: "PNG 8-bit RGB 10000x10000",
        file: "limit.png",
        worst: false,
        make: Make::Ffmpeg(&["-f", "lavfi", "-i", TEST_PICTURE, "-frames:v", "1", "-pix_fmt", "rgb24"]),
    },
    Case {
        function: "ProcessImageFunction",
        format: "PNG RGBA interlaced 10000x10000 (decoded whole)",
        file: "limit-interlaced.png",
        worst: true,
        make: Make::Convert("limit.png", &["-alpha", "set", "-interlace", "PNG"]),
    },
    Case {
        function: "ProcessImageFunction",
        format: "WebP lossy 16382x6104",
        file: "limit.webp",
        worst: false,
        make: Make::Ffmpeg(&["-f", "lavfi", "-i", "testsrc2=size=16382x6104", "-frames:v", "1", "-c:v", "libwebp", "-quality", "80"]),
    },
    Case {
        function: "ProcessImageFunction",
        format: "TIFF tiled, deflate, 10000x10000 (decoded whole)",
        file: "limit-tiled.tiff",
        worst: false,
        // Deflate, not LZW: the tiff crate (0.11.3) refuses ImageMagick's tiled
        // LZW files, whose edge tiles end without an end code (image-tiff
        // issue 395, fixed upstream after that release).
        make: Make::Convert("limit.png", &["-compress", "Zip", "-define", "tiff:tile-geometry=256x256"]),
    },
    Case {
        function: "ProcessImageFunction",
        format: "BMP 24-bit 5900x5900 (100 MiB)",
        file: "limit.bmp",
        worst: false,
        make: Make::Ffmpeg(&["-f", "lavfi", "-i", "testsrc2=size=5900x5900", "-frames:v", "1", "-pix_fmt", "bgr24"]),
    },
    Case {
        function: "ProcessDocumentFunction",
        format: "PDF of 5,000 small pages (the page limit)",
        file: "limit-pages.pdf",
        worst: false,
        make: Make::Pdf(super::documents::write_page_limit),
    },
    Case {
        function: "ProcessDocumentFunction",
        format: "PDF of scanned pages, 190 MiB",
        file: "limit-scanned.pdf",
        worst: true,
        make: Make::Pdf(super::documents::write_size_limit),
    },
    Case {
        function: "ProcessAudioFunction",
        format: "WAV 16-bit stereo 44.1 kHz, 49 min (500 MiB)",
        file: "limit.wav",
        worst: false,
        make: Make::Ffmpeg(&["-f", "lavfi", "-i", "sine=frequency=440:duration=2970:sample_rate=44100", "-ac", "2", "-c:a", "pcm_s16le"]),
    },
    Case {
        function: "ProcessVideoFunction",
        format: "H.264 16384x4096, 10 s at 2 fps, every frame a keyframe",
        file: "limit-16k-2fps.mp4",
        worst: true,
        make: Make::Ffmpeg(&[
            "-f", "lavfi", "-i", "testsrc2=size=16384x4096:rate=2:duration=10", "-c:v", "libx264", "-preset", "ultrafast", "-g", "2", "-pix_fmt", "yuv420p",
        ]),
    },
    Case {
        function: "ProcessVideoFunction",
        format: "VP9 16384x4096, 10 s at 2 fps, every frame a keyframe",
        file: "limit-16k-2fps.webm",
        worst: false,
        make: Make::Ffmpeg(&[
            "-f", "lavfi", "-i", "testsrc2=size=16384x4096:rate=2:duration=10", "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-row-mt", "1", "-b:v", "8M", "-g", "2",
        ]),
    },
];

fn make(dir: &Path, case: &Case) -> anyhow::Result<PathBuf> {
    let path = dir.join(case.file);
    if path.exists() {
        return Ok(path);
    }
    let ok = match &case.make {
        Make::Ffmpeg(args) => Command::new("ffmpeg").args(["-hide_banner", "-v", "error", "-y"]).args(*args).arg(&path).status()?.success(),
        Make::Convert(source, args) => {
            let source = dir.join(source);
            anyhow::ensure!(source.exists(), "{} is made from {}, listed before it", case.file, source.display());
            // ImageMagick's default policy caps a picture's area and memory below 100 megapixels' needs.
            Command::new("convert")
                .args(["-limit", "area", "2GP", "-limit", "memory", "4GiB", "-limit", "disk", "8GiB"])
                .arg(&source)
                .args(*args)
                .arg(&path)
                .status()?
                .success()
        }
        Make::Pdf(write) => {
            write(&path)?;
            true
        }
    };
    anyhow::ensure!(ok, "could not make {}", path.display());
    Ok(path)
}

/// The peak memory of a command's process tree (sampled every 10 ms), its
/// wall time, and whether it succeeded.
fn tree_peak(cmd: &mut Command) -> anyhow::Result<(u64, Duration, bool)> {
    let started = Instant::now();
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().with_context(|| format!("running {:?}", cmd.get_program()))?;
    let mut peak = 0;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        peak = peak.max(prism_cloud::process::tree_memory_bytes(child.id()).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(10));
    };
    Ok((peak, started.elapsed(), status.success()))
}

pub fn memory(project: &Path, scratch: &Path, prism_exe: &Path, out: &mut String) -> anyhow::Result<()> {
    let dir = scratch.join("limits");
    std::fs::create_dir_all(&dir)?;
    let template = Template::load(&project.join("template.yaml"))?;
    let memory_size = |function: &str| -> anyhow::Result<u64> {
        let resource = template.resources.get(function).with_context(|| format!("template.yaml has no {function}"))?;
        resource.properties["MemorySize"].as_u64().with_context(|| format!("{function} has no MemorySize"))
    };
    writeln!(out, "## Memory at the limits\n")?;
    writeln!(
        out,
        "Each processor on the largest input of each format its limits let through: `prism analyse` (the \
         processor's code, in process) and the ffmpeg runs it starts, their resident memory summed every 10 ms \
         as the local cloud's watchdog counts it, against the function's `MemorySize`.\n"
    )?;
    writeln!(out, "| function | input | peak | MemorySize | peak / MemorySize | time | outcome |\n|---|---|---:|---:|---:|---:|---|")?;
    for case in CASES {
        let path = make(&dir, case)?;
        let limit_mb = memory_size(case.function)?;
        let (peak, took, ok) = tree_peak(Command::new(prism_exe).arg("analyse").arg(&path))?;
        let peak_mb = peak as f64 / (1024.0 * 1024.0);
        let share = peak_mb / limit_mb as f64;
        let outcome = match (ok, share <= 0.8) {
            (true, true) => "fits, with 20% or more to spare",
            (true, false) if share <= 1.0 => "fits, with less than 20% to spare",
            (true, false) => "over its MemorySize: killed on Lambda",
            (false, _) => "refused or failed (see `prism analyse`)",
        };
        writeln!(
            out,
            "| {} | {}{} | {peak_mb:.0} MB | {limit_mb} MB | {:.0}% | {:.1} s | {outcome} |",
            case.function.trim_end_matches("Function"),
            case.format,
            if case.worst { " (held to it by a test)" } else { "" },
            share * 100.0,
            took.as_secs_f64()
        )?;
    }
    writeln!(out, "\nGoal: every peak within its function's MemorySize with 20% to spare.\n")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// The most memory this process and its children held while `work` ran,
    /// sampled every 10 ms as [`tree_peak`] samples a child's tree (resident
    /// sets, not this process's high-water mark, which earlier cases raised).
    fn peak_while(work: impl FnOnce()) -> u64 {
        let done = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let sampler = scope.spawn(|| {
                let mut peak = 0;
                while !done.load(Ordering::Relaxed) {
                    peak = peak.max(prism_cloud::process::tree_resident_bytes(std::process::id()).unwrap_or(0));
                    std::thread::sleep(Duration::from_millis(10));
                }
                peak
            });
            work();
            done.store(true, Ordering::Relaxed);
            sampler.join().expect("sampler")
        })
    }

    #[test]
    fn each_processor_keeps_within_its_memory_size_on_its_worst_input_at_the_limits() {
        let project = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let template = Template::load(&project.join("template.yaml")).expect("template");
        let dir = tempfile::tempdir().expect("temp dir");
        // The interlaced PNG is made from the plain one.
        let source = CASES.iter().find(|c| c.file == "limit.png").expect("the plain PNG");
        make(dir.path(), source).expect("made");
        for case in CASES.iter().filter(|c| c.worst) {
            let path = make(dir.path(), case).expect("made");
            let limit_mb = template.resources[case.function].properties["MemorySize"].as_u64().expect("MemorySize");
            let mut report = serde_json::Value::Null;
            let peak = peak_while(|| report = crate::commands::analyse::report(&path, None, true).expect("analysed"));
            assert!(report.get("error").is_none(), "{}: {report}", case.format);
            let peak_mb = peak / (1024 * 1024);
            // Each worst case holds hundreds of MB: a sampler that saw nothing would pass the bound below vacuously.
            assert!(peak_mb >= 100, "{}: the sampler saw the work ({peak_mb} MB)", case.format);
            assert!(
                peak_mb * 10 <= limit_mb * 8,
                "{}: {peak_mb} MB is over 80% of {} MemorySize, {limit_mb} MB",
                case.format,
                case.function
            );
        }
    }
}
