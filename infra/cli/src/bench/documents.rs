//! PDF text per kind of PDF: `prism analyse --no-preview` (process-document's
//! text of every page) against `pdftotext`, the same files in the same run.
//! Each tool runs once per file, as a Lambda invocation reads one document,
//! inside one timed shell loop per kind (best of three by wall time): CPU is
//! user + system time of every process, memory the largest process's peak.
//!
//! The kinds: typeset text (manual pages set by groff, and the PDFs Debian
//! ships), scanned pages (each page one greyscale JPEG and no text), many
//! small pages, and one huge page. The last three are written here with
//! `pdf-writer`, so every run reads the same corpus.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use pdf_writer::{Content, Filter, Finish, Name, Pdf, Rect, Ref, Str};

use super::timing::{Run, best};

/// One kind of PDF and its files.
struct Kind {
    name: &'static str,
    files: Vec<PathBuf>,
}

/// A page to write: its size in points, lines of Helvetica, and an optional
/// greyscale JPEG covering it.
struct Page<'a> {
    width: f32,
    height: f32,
    font_size: f32,
    lines: Vec<String>,
    scan: Option<Scan<'a>>,
}

/// A JPEG drawn over a whole page; pages that show the same picture share its bytes.
#[derive(Clone, Copy)]
struct Scan<'a> {
    jpeg: &'a [u8],
    width: i32,
    height: i32,
}

/// A PDF of `pages` with the base-14 Helvetica (no font embedded, as in
/// most generated documents).
fn write_pdf(path: &Path, pages: &[Page<'_>]) -> anyhow::Result<()> {
    let (catalog, tree, font) = (Ref::new(1), Ref::new(2), Ref::new(3));
    let mut next = 4;
    let mut alloc = || {
        next += 1;
        Ref::new(next - 1)
    };
    let mut pdf = Pdf::new();
    pdf.catalog(catalog).pages(tree);
    pdf.type1_font(font).base_font(Name(b"Helvetica"));
    let mut kids = Vec::with_capacity(pages.len());
    for page in pages {
        let (page_id, content_id) = (alloc(), alloc());
        let image_id = page.scan.as_ref().map(|_| alloc());
        kids.push(page_id);
        let mut writer = pdf.page(page_id);
        writer.parent(tree).media_box(Rect::new(0.0, 0.0, page.width, page.height)).contents(content_id);
        let mut resources = writer.resources();
        resources.fonts().pair(Name(b"F1"), font);
        if let Some(id) = image_id {
            resources.x_objects().pair(Name(b"Im1"), id);
        }
        resources.finish();
        writer.finish();
        let mut content = Content::new();
        if let (Some(id), Some(scan)) = (image_id, &page.scan) {
            let mut image = pdf.image_xobject(id, scan.jpeg);
            image.filter(Filter::DctDecode);
            image.width(scan.width).height(scan.height).bits_per_component(8);
            image.color_space().device_gray();
            image.finish();
            content.save_state().transform([page.width, 0.0, 0.0, page.height, 0.0, 0.0]).x_object(Name(b"Im1")).restore_state();
        }
        if !page.lines.is_empty() {
            let leading = page.font_size * 1.25;
            content.begin_text().set_font(Name(b"F1"), page.font_size).next_line(page.font_size, page.height - leading);
            for line in &page.lines {
                content.show(Str(line.as_bytes())).next_line(0.0, -leading);
            }
            content.end_text();
        }
        pdf.stream(content_id, &content.finish());
    }
    let count = i32::try_from(kids.len()).context("too many pages")?;
    pdf.pages(tree).kids(kids).count(count);
    std::fs::write(path, pdf.finish()).with_context(|| format!("writing {}", path.display()))
}

/// `count` pages the size of a label (200 x 140 pt), eight short lines each.
fn labels(rng: &mut fastrand::Rng, count: usize) -> Vec<Page<'static>> {
    (0..count).map(|_| Page { width: 200.0, height: 140.0, font_size: 9.0, lines: prose(rng, 8, 6), scan: None }).collect()
}

/// A page that is only `scan`, A4.
fn scanned_page(scan: Scan<'_>) -> Page<'_> {
    Page { width: 595.0, height: 842.0, font_size: 10.0, lines: Vec::new(), scan: Some(scan) }
}

/// Lines of `words` words from a small vocabulary, seeded.
fn prose(rng: &mut fastrand::Rng, lines: usize, words: usize) -> Vec<String> {
    #[rustfmt::skip]
    const VOCABULARY: &[&str] = &[
        "the", "job", "pipeline", "reads", "every", "page", "of", "a", "document", "and", "writes", "its", "text", "to", "storage",
        "while", "events", "tell", "subscribers", "how", "far", "it", "got", "retries", "are", "bounded", "nothing", "is", "lost",
    ];
    (0..lines).map(|_| (0..words).map(|_| VOCABULARY[rng.usize(..VOCABULARY.len())]).collect::<Vec<_>>().join(" ")).collect()
}

/// Manual pages typeset as PDFs by groff, plus the PDFs Debian's documentation ships.
fn typeset(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
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

/// Sixteen PDFs of eight pages, each page a 150 dpi greyscale scan (the
/// typeset manual pages drawn by `pdftoppm`) and no text: what an office
/// scanner makes.
fn scanned(dir: &Path, typeset: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let sources: Vec<&PathBuf> = typeset.iter().filter(|p| p.starts_with(dir.parent().unwrap_or(dir))).take(32).collect();
    let mut scans = Vec::new();
    for (i, source) in sources.iter().enumerate() {
        let stem = dir.join(format!("scan-{i}"));
        let jpeg = stem.with_extension("jpg");
        if !jpeg.exists() {
            let status = Command::new("pdftoppm")
                .args(["-jpeg", "-gray", "-r", "150", "-f", "1", "-l", "1", "-singlefile"])
                .arg(source)
                .arg(&stem)
                .status()
                .context("running pdftoppm")?;
            anyhow::ensure!(status.success(), "pdftoppm could not draw {}", source.display());
        }
        let bytes = std::fs::read(&jpeg)?;
        let (width, height) = image::image_dimensions(&jpeg).with_context(|| format!("reading {}", jpeg.display()))?;
        scans.push((bytes, i32::try_from(width)?, i32::try_from(height)?));
    }
    anyhow::ensure!(scans.len() >= 4, "too few pages to scan: {}", scans.len());
    let mut files = Vec::new();
    for i in 0..16 {
        let path = dir.join(format!("scanned-{i}.pdf"));
        let pages: Vec<Page<'_>> = (0..8)
            .map(|page| &scans[(i * 8 + page) % scans.len()])
            .map(|(jpeg, width, height)| scanned_page(Scan { jpeg, width: *width, height: *height }))
            .collect();
        write_pdf(&path, &pages)?;
        files.push(path);
    }
    Ok(files)
}

/// Eight PDFs of 500 pages the size of a label (200 x 140 pt), eight short lines each.
fn small_pages(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut rng = fastrand::Rng::with_seed(19);
    let mut files = Vec::new();
    for i in 0..8 {
        let path = dir.join(format!("labels-{i}.pdf"));
        write_pdf(&path, &labels(&mut rng, 500))?;
        files.push(path);
    }
    Ok(files)
}

/// Three PDFs of one page at PDF's largest size (14,400 pt square, 5 m), with
/// 1,200 lines of 250 words: a wall chart, a plotted drawing's legend.
fn huge_page(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut rng = fastrand::Rng::with_seed(5);
    let mut files = Vec::new();
    for i in 0..3 {
        let path = dir.join(format!("poster-{i}.pdf"));
        write_pdf(&path, &[Page { width: 14_400.0, height: 14_400.0, font_size: 9.0, lines: prose(&mut rng, 1_200, 250), scan: None }])?;
        files.push(path);
    }
    Ok(files)
}

fn pdf_pages(path: &Path) -> Option<u64> {
    let out = Command::new("pdfinfo").arg(path).output().ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| l.strip_prefix("Pages:")?.trim().parse().ok())
}

/// `program before… FILE after…` for every file, one process each, in one
/// shell script that `/usr/bin/time` measures as a whole (its CPU time and
/// peak include every process it waited for).
fn each_file(program: &Path, before: &[&str], after: &[&str], files: &[PathBuf]) -> Command {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let words = |args: &[&str]| args.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ");
    let (program, before, after) = (quote(&program.to_string_lossy()), words(before), words(after));
    let script: String =
        files.iter().map(|f| format!("{program} {before} {} {after} >/dev/null || exit 1\n", quote(&f.to_string_lossy()))).collect();
    let mut command = Command::new("sh");
    command.arg("-c").arg(script);
    command
}

/// Whether pdftotext reads `file`: what it cannot read is left out of both sides.
fn pdftotext_reads(file: &Path) -> anyhow::Result<bool> {
    let status = Command::new("pdftotext").arg("-q").arg(file).arg("/dev/null").status().context("running pdftotext")?;
    Ok(status.success())
}

pub fn documents(scratch: &Path, prism_exe: &Path, out: &mut String) -> anyhow::Result<()> {
    let dir = scratch.join("pdfs");
    let typeset_files = typeset(&dir)?;
    let kinds = [
        Kind { name: "typeset text (manual pages, Debian's PDFs)", files: typeset_files.clone() },
        Kind { name: "scanned pages (one JPEG a page, no text)", files: scanned(&dir.join("scanned"), &typeset_files)? },
        Kind { name: "many small pages (500 labels a file)", files: small_pages(&dir.join("small"))? },
        Kind { name: "one huge page (14,400 pt square, 300,000 words)", files: huge_page(&dir.join("huge"))? },
    ];
    let pdftotext = Path::new("pdftotext");
    writeln!(out, "## PDF text\n")?;
    writeln!(
        out,
        "Per kind of PDF: `prism analyse --no-preview` against `pdftotext -q F /dev/null`, a process per file, \
         every file of a kind in one timed loop, best of 3 by wall time. prism reads pages side by side, one \
         reader per CPU it may use (two here; a Lambda function above 1,769 MB has two), and is also run held to \
         one CPU (`taskset -c 0`); pdftotext reads one page at a time. CPU is user + system time, memory the \
         largest process's peak.\n"
    )?;
    writeln!(
        out,
        "| kind | files | pages | pdftotext pages/s | prism, 1 CPU | prism, 2 CPUs | 1 CPU vs pdftotext | 2 CPUs vs pdftotext | CPU vs pdftotext (2 CPUs) | prism peak | pdftotext peak | goal (>= 1.0x pages/s) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    )?;
    let mut typeset_rates = None;
    for kind in &kinds {
        // What pdftotext reads is the baseline.
        let mut handled = Vec::new();
        for file in &kind.files {
            if pdftotext_reads(file)? {
                handled.push(file.clone());
            }
        }
        anyhow::ensure!(!handled.is_empty(), "pdftotext read none of {}", kind.name);
        let pages: u64 = handled.iter().filter_map(|p| pdf_pages(p)).sum();
        let reference = best(|| each_file(pdftotext, &["-q"], &["/dev/null"], &handled))?;
        let prism = best(|| each_file(prism_exe, &["analyse", "--no-preview"], &[], &handled))?;
        let exe = prism_exe.to_string_lossy();
        let one_cpu = best(|| each_file(Path::new("taskset"), &["-c", "0", &exe, "analyse", "--no-preview"], &[], &handled))?;
        let rate = |run: &Run| pages as f64 / run.wall;
        let ratio = rate(&prism) / rate(&reference);
        let goal = if ratio >= 1.0 { "met".to_owned() } else { format!("missed: {:.0}% of its rate", ratio * 100.0) };
        writeln!(
            out,
            "| {} | {} | {pages} | {:.0} | {:.0} | {:.0} | {:.2}x | {ratio:.2}x | {:.2}x | {:.0} MB | {:.0} MB | {goal} |",
            kind.name,
            handled.len(),
            rate(&reference),
            rate(&one_cpu),
            rate(&prism),
            rate(&one_cpu) / rate(&reference),
            prism.cpu / reference.cpu,
            prism.peak_mb,
            reference.peak_mb,
        )?;
        if typeset_rates.is_none() {
            typeset_rates = Some((handled, pages, rate(&reference)));
        }
    }
    if let Some((handled, pages, reference_rate)) = typeset_rates {
        let with_preview = best(|| each_file(prism_exe, &["analyse"], &[], &handled))?;
        let rate = pages as f64 / with_preview.wall;
        writeln!(
            out,
            "\nThe first-page preview, measured apart on the typeset kind: text and preview {rate:.0} pages/s, \
             {:.2}x pdftotext's text rate, peak {:.0} MB.\n",
            rate / reference_rate,
            with_preview.peak_mb
        )?;
    }
    Ok(())
}

/// The page limit (5,000) in labels: for the memory benchmark.
pub(super) fn write_page_limit(path: &Path) -> anyhow::Result<()> {
    write_pdf(path, &labels(&mut fastrand::Rng::with_seed(5_000), 5_000))
}

/// Scanned pages up to 190 MiB, just under the document size limit (200
/// MiB): for the memory benchmark. Each page is a 150 dpi greyscale picture.
pub(super) fn write_size_limit(path: &Path) -> anyhow::Result<()> {
    let (width, height) = (1240, 1754);
    let picture = path.with_extension("jpg");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-y", "-f", "lavfi", "-i", &format!("testsrc2=size={width}x{height}")])
        .args(["-frames:v", "1", "-pix_fmt", "gray", "-q:v", "2"])
        .arg(&picture)
        .status()
        .context("running ffmpeg")?;
    anyhow::ensure!(status.success(), "ffmpeg could not draw a page");
    let jpeg = std::fs::read(&picture)?;
    let count = (190 * 1024 * 1024) / jpeg.len().max(1);
    let pages: Vec<Page<'_>> = (0..count).map(|_| scanned_page(Scan { jpeg: &jpeg, width, height })).collect();
    write_pdf(path, &pages)
}
