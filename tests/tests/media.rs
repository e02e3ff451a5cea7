//! A folder of real files (audio, video and images encoded by ffmpeg, a PDF
//! typeset by groff, CSV and Markdown, and damaged copies) goes through
//! `prism submit --wait --json`, as a user would send it: every job ends,
//! the results carry the right dimensions, durations, codecs, page and word
//! counts and text structure, and the outputs open as what they claim to be.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{TestCloud, ffmpeg, images, project_dir};
use prism_cloud::EmulatorChoice;
use serde_json::Value;

fn truncated(dir: &Path, from: &Path, name: &str, keep: f64) -> PathBuf {
    let bytes = std::fs::read(from).expect("source");
    let out = dir.join(name);
    std::fs::write(&out, &bytes[..(bytes.len() as f64 * keep) as usize]).expect("written");
    out
}

/// The folder: what each file is and how its job must end.
fn media_folder(dir: &Path) -> Vec<PathBuf> {
    let tone = ["-f", "lavfi", "-i", "sine=frequency=440:duration=5", "-metadata", "title=Prism tone"];
    let mp3 = ffmpeg(dir, "tone.mp3", &[&tone[..], &["-c:a", "libmp3lame", "-b:a", "128k"]].concat());
    let opus = ffmpeg(dir, "voice.opus", &[&tone[..], &["-c:a", "libopus"]].concat());
    let video = ["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25:duration=6", "-f", "lavfi", "-i", "sine=duration=6"];
    let mp4 = ffmpeg(dir, "clip.mp4", &[&video[..], &["-c:v", "libx264", "-preset", "ultrafast", "-g", "50", "-c:a", "aac"]].concat());
    let silent = ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30:duration=3", "-c:v", "libvpx-vp9", "-deadline", "realtime"];
    let webm = ffmpeg(dir, "silent.webm", &[&silent[..], &["-cpu-used", "8", "-b:v", "300k"]].concat());
    // A camcorder's transport stream: MPEG-2 video and MP2 audio in 188-byte packets.
    let broadcast = ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=3", "-f", "lavfi", "-i", "sine=duration=3"];
    let ts = ffmpeg(dir, "camcorder.ts", &[&broadcast[..], &["-c:v", "mpeg2video", "-c:a", "mp2", "-f", "mpegts"]].concat());
    let pdf = dir.join("ls.pdf");
    let script = format!("zcat -f /usr/share/man/man1/ls.1* | groff -Tpdf -man -P-pa4 > '{}'", pdf.display());
    assert!(Command::new("sh").args(["-c", &script]).status().expect("groff runs").success());
    // A WAV whose headers (RIFF and data sizes) promise ten seconds in front of
    // one, as an upload cut short leaves it.
    let mut lying = ffmpeg(dir, "one-second.wav", &["-f", "lavfi", "-i", "sine=duration=1:sample_rate=8000", "-c:a", "pcm_s16le"]);
    let mut wav = std::fs::read(&lying).expect("wav");
    let data = wav.windows(4).position(|w| w == b"data").expect("data chunk") + 4;
    let promised = 10u32 * 8000 * 2;
    wav[data..data + 4].copy_from_slice(&promised.to_le_bytes());
    let riff = u32::try_from(data + 4 - 8).expect("small") + promised;
    wav[4..8].copy_from_slice(&riff.to_le_bytes());
    lying = dir.join("lying.wav");
    std::fs::write(&lying, wav).expect("written");
    let cut_mp3 = truncated(dir, &mp3, "cut.mp3", 0.5);
    let cut_mp4 = truncated(dir, &mp4, "cut.mp4", 0.5);
    let junk_pdf = dir.join("junk.pdf");
    std::fs::write(&junk_pdf, b"%PDF-1.7\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n").expect("written");
    let photo = ffmpeg(dir, "photo.jpg", &["-f", "lavfi", "-i", "testsrc2=size=1600x1200", "-frames:v", "1", "-q:v", "3"]);
    let overlay =
        ffmpeg(dir, "overlay.png", &["-f", "lavfi", "-i", "testsrc2=size=800x600,format=rgba,colorchannelmixer=aa=0.5", "-frames:v", "1"]);
    let gif = ffmpeg(dir, "spinner.gif", &["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=10:duration=1"]);
    let cut_jpg = truncated(dir, &photo, "cut.jpg", 0.4);
    let csv = dir.join("sales.csv");
    let rows: String = (1..=40).map(|i| format!("{i},widget {i},{}.50,EUR\n", i * 3)).collect();
    std::fs::write(&csv, format!("id,item,price,currency\n{rows}")).expect("written");
    let markdown = dir.join("notes.md");
    std::fs::write(
        &markdown,
        "# Release notes\n\nPrism processes files.\n\n## Audio\n\nOpus decodes in process.\n\n## Documents\n\nPreviews have fonts.\n",
    )
    .expect("written");
    vec![mp3, opus, mp4, webm, ts, pdf, lying, cut_mp3, cut_mp4, junk_pdf, photo, overlay, gif, cut_jpg, csv, markdown]
}

fn words_by_pdftotext(path: &Path) -> usize {
    let out = Command::new("pdftotext").arg(path).arg("-").output().expect("pdftotext");
    String::from_utf8_lossy(&out.stdout).split_whitespace().count()
}

fn close(actual: &Value, expected: f64, tolerance: f64) -> bool {
    actual.as_f64().is_some_and(|a| (a - expected).abs() <= tolerance)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_media_folder_goes_through_prism_submit() {
    let tc = TestCloud::start(EmulatorChoice::Localstack).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let files = media_folder(dir.path());
    let prism = std::env::current_exe().expect("test exe").parent().and_then(Path::parent).expect("target dir").join("prism");
    let started = std::time::Instant::now();
    let out = tokio::process::Command::new(&prism)
        .current_dir(project_dir())
        .args(["submit", "--wait", "--json", "--timeout", "240", "--api", &tc.cloud.info.http_url, "--token", &tc.token("tester")])
        .args(tc.cloud.info.websocket_url.iter().flat_map(|ws| ["--websocket", ws.as_str()]))
        .args(&files)
        .output()
        .await
        .expect("prism submit runs");
    // Exit status 2: some jobs (the damaged files) did not complete, as intended.
    assert_eq!(out.status.code(), Some(2), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(started.elapsed().as_secs() < 240, "every job ended well inside its deadline");
    let reports: HashMap<String, Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .map(|r| (Path::new(r["file"].as_str().expect("file")).file_name().expect("name").to_string_lossy().into_owned(), r))
        .collect();
    assert_eq!(reports.len(), files.len(), "{reports:#?}");
    let report = |name: &str| reports.get(name).unwrap_or_else(|| panic!("no report for {name}"));
    let completed = |name: &str| {
        let r = report(name);
        assert_eq!(r["status"], "completed", "{name}: {r}");
        r["result"].clone()
    };

    let mp3 = completed("tone.mp3");
    assert_eq!((mp3["kind"].as_str(), mp3["codec"].as_str(), mp3["sample_rate"].as_u64()), (Some("audio"), Some("mp3"), Some(44_100)));
    assert!(close(&mp3["duration_s"], 5.0, 0.05), "{mp3}");
    assert_eq!(mp3["tags"]["title"], "Prism tone");
    assert!(mp3["levels"]["integrated_lufs"].as_f64().is_some_and(|l| (-25.0..-15.0).contains(&l)), "{mp3}");
    let opus = completed("voice.opus");
    assert_eq!((opus["codec"].as_str(), opus["decoder"].as_str()), (Some("opus"), Some("opus-pure")));
    assert!(close(&opus["duration_s"], 5.0, 0.05), "{opus}");
    let lying = completed("lying.wav");
    assert!(close(&lying["duration_s"], 1.0, 0.01) && close(&lying["declared_duration_s"], 10.0, 0.01), "{lying}");
    let cut_mp3 = completed("cut.mp3");
    assert!(close(&cut_mp3["duration_s"], 2.5, 0.3), "{cut_mp3}");

    let mp4 = completed("clip.mp4");
    assert_eq!((mp4["kind"].as_str(), mp4["video_codec"].as_str()), (Some("video"), Some("h264")));
    assert_eq!((mp4["width"].as_u64(), mp4["height"].as_u64()), (Some(640), Some(360)));
    assert!(close(&mp4["duration_s"], 6.0, 0.06) && close(&mp4["frame_rate"], 25.0, 0.01), "{mp4}");
    assert_eq!((mp4["has_audio"].as_bool(), mp4["audio"]["codec"].as_str()), (Some(true), Some("aac")));
    let webm = completed("silent.webm");
    assert_eq!((webm["video_codec"].as_str(), webm["width"].as_u64(), webm["has_audio"].as_bool()), (Some("vp9"), Some(320), Some(false)));
    let ts = completed("camcorder.ts");
    assert_eq!((ts["container"].as_str(), ts["video_codec"].as_str()), (Some("mpegts"), Some("mpeg2video")), "{ts}");
    assert_eq!((ts["has_audio"].as_bool(), ts["audio"]["codec"].as_str()), (Some(true), Some("mp2")), "{ts}");

    let pdf = completed("ls.pdf");
    assert_eq!(pdf["kind"], "document");
    let pages = Command::new("pdfinfo").arg(dir.path().join("ls.pdf")).output().expect("pdfinfo");
    let pages: u64 = String::from_utf8_lossy(&pages.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Pages:").and_then(|n| n.trim().parse().ok()))
        .expect("pages");
    assert_eq!(pdf["pages"].as_u64(), Some(pages));
    let reference = words_by_pdftotext(&dir.path().join("ls.pdf")) as f64;
    let words = pdf["words"].as_f64().expect("words");
    assert!((words / reference - 1.0).abs() <= 0.1, "{words} words vs pdftotext's {reference}");

    let photo = completed("photo.jpg");
    assert_eq!((photo["kind"].as_str(), photo["format"].as_str()), (Some("image"), Some("jpeg")));
    assert_eq!((photo["width"].as_u64(), photo["height"].as_u64(), photo["has_alpha"].as_bool()), (Some(1600), Some(1200), Some(false)));
    assert_eq!(photo["perceptual_hash"].as_str().map(str::len), Some(16), "{photo}");
    let overlay = completed("overlay.png");
    assert_eq!(
        (overlay["format"].as_str(), overlay["width"].as_u64(), overlay["has_alpha"].as_bool()),
        (Some("png"), Some(800), Some(true))
    );
    let gif = completed("spinner.gif");
    assert_eq!((gif["format"].as_str(), gif["width"].as_u64(), gif["animated"].as_bool()), (Some("gif"), Some(320), Some(true)));
    let csv = completed("sales.csv");
    assert_eq!(csv["kind"], "text");
    assert_eq!((csv["structure"]["kind"].as_str(), csv["structure"]["rows"].as_u64()), (Some("csv"), Some(41)), "{csv}");
    assert_eq!((csv["structure"]["columns"].as_u64(), csv["structure"]["consistent"].as_bool()), (Some(4), Some(true)), "{csv}");
    let notes = completed("notes.md");
    let headings: Vec<(u64, &str)> = notes["structure"]["headings"]
        .as_array()
        .unwrap_or_else(|| panic!("no headings: {notes}"))
        .iter()
        .map(|h| (h["level"].as_u64().expect("level"), h["text"].as_str().expect("text")))
        .collect();
    assert_eq!(headings, [(1, "Release notes"), (2, "Audio"), (2, "Documents")]);

    for (name, code) in [("cut.mp4", "corrupt_video"), ("junk.pdf", "corrupt_document"), ("cut.jpg", "corrupt_image")] {
        let r = report(name);
        assert_eq!((r["status"].as_str(), r["error"]["code"].as_str()), (Some("failed"), Some(code)), "{name}: {r}");
    }

    // The outputs exist and open as what they claim to be.
    let http = reqwest::Client::new();
    let spec = common::openapi::OpenApi::load();
    let outputs = |name: &str| {
        let id = report(name)["job_id"].as_str().expect("job id").to_owned();
        let (api, http, spec) = (&tc.api, &http, &spec);
        async move {
            let snapshot: Value =
                api.request(reqwest::Method::GET, &format!("/v1/jobs/{id}")).send().await.expect("get").json().await.expect("json");
            // The result matches its documented schema.
            spec.check("GET", "/v1/jobs/{id}", 200, "application/json", &snapshot);
            let mut files = HashMap::new();
            for link in snapshot["links"].as_array().expect("links") {
                let body = http.get(link["url"].as_str().expect("url")).send().await.expect("download").bytes().await.expect("body");
                files.insert(
                    link["name"].as_str().expect("name").to_owned(),
                    (link["content_type"].as_str().unwrap_or("").to_owned(), body),
                );
            }
            files
        }
    };
    let photo = outputs("photo.jpg").await;
    for (name, size) in [("thumbnail_1024", (1024, 768)), ("thumbnail_256", (256, 192))] {
        assert_eq!(images::decoded_size(&photo[name].1), size, "{name}");
        assert!(photo[name].0.starts_with("image/"), "{name}: {}", photo[name].0);
    }
    let tone = outputs("tone.mp3").await;
    let waveform: Value = serde_json::from_slice(&tone["waveform"].1).expect("waveform is JSON");
    assert_eq!(waveform["peaks"].as_array().map(Vec::len), Some(500), "5 s of 10 ms blocks");
    let clip = outputs("clip.mp4").await;
    assert_eq!(images::decoded_size(&clip["contact_sheet"].1), (4 * 320, 3 * 180), "contact sheet");
    assert_eq!(images::decoded_size(&clip["poster"].1), (640, 360), "poster");
    assert_eq!(clip["audio"].0, "audio/mp4");
    let doc = outputs("ls.pdf").await;
    let (width, height) = images::decoded_size(&doc["preview"].1);
    assert!(width > 0 && height > 0, "preview");
    let pages_json: Value = serde_json::from_slice(&doc["pages"].1).expect("pages is JSON");
    assert_eq!(pages_json["pages"].as_array().map(Vec::len) as Option<usize>, Some(pages as usize));
    assert!(String::from_utf8_lossy(&doc["text"].1).contains("LS(1)"));
    tc.finish().await;
}

/// A one-page PDF in Helvetica, named and not embedded, as many generators write it.
fn standard_font_pdf() -> Vec<u8> {
    let content = "BT /F1 40 Tf 50 700 Td (Hello Prism, standard fonts) Tj ET";
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_owned(),
        format!("<< /Length {} >>\nstream\n{content}\nendstream", content.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".to_owned(),
    ];
    let mut pdf = String::from("%PDF-1.4\n");
    let mut offsets = Vec::new();
    for (i, object) in objects.iter().enumerate() {
        offsets.push(pdf.len());
        pdf += &format!("{} 0 obj\n{object}\nendobj\n", i + 1);
    }
    let xref = pdf.len();
    pdf += &format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1);
    for offset in offsets {
        pdf += &format!("{offset:010} 00000 n \n");
    }
    pdf += &format!("trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n", objects.len() + 1);
    pdf.into_bytes()
}

/// On an OS without fonts (Lambda's), a PDF's standard fonts are drawn with
/// the fallback the function installs; without it every glyph is a box.
/// `prism analyse` runs process-document's code with the font database
/// pointed (FONTCONFIG_FILE) at `$HOME/.fonts` alone, as on Lambda.
#[test]
fn standard_fonts_render_as_text_where_the_os_has_no_fonts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pdf = dir.path().join("letter.pdf");
    std::fs::write(&pdf, standard_font_pdf()).expect("written");
    let fontconfig = dir.path().join("fonts.conf");
    std::fs::write(&fontconfig, "<?xml version=\"1.0\"?>\n<fontconfig><dir>~/.fonts</dir></fontconfig>\n").expect("written");
    let prism = std::env::current_exe().expect("test exe").parent().and_then(Path::parent).expect("target dir").join("prism");
    // The share of dark pixels in the preview's band of text.
    let ink = |fallback: bool| {
        let home = tempfile::tempdir().expect("home");
        let out = dir.path().join(format!("out-{fallback}"));
        let mut analyse = Command::new(&prism);
        analyse.current_dir(project_dir()).env("HOME", home.path()).env("FONTCONFIG_FILE", &fontconfig);
        analyse.env_remove("FALLBACK_FONTS_DIR");
        if fallback {
            analyse.env("FALLBACK_FONTS_DIR", home.path().join(".fonts"));
        }
        analyse.arg("analyse").arg(&pdf).arg("--out").arg(&out).stdout(std::process::Stdio::null());
        let status = analyse.status().expect("prism analyse runs");
        assert!(status.success());
        let png = std::fs::read(out.join("letter").join("preview.png")).expect("a PNG preview");
        let (width, height, grey) = images::grey_pixels(&png);
        // The line of text sits at y 700 of 792 points: the top 15% of the page.
        let band = height * 15 / 100;
        let dark = grey[..(band * width) as usize].iter().filter(|&&level| level < 128).count();
        dark as f64 / f64::from(band * width)
    };
    let (boxes, text) = (ink(false), ink(true));
    // Glyph boxes fill most of each character cell; glyphs about a fifth of it.
    assert!(text > 0.01, "no text drawn with the fallback fonts: {text:.3}");
    assert!(boxes > 2.0 * text, "without fonts {boxes:.3} of the band is ink, with the fallback {text:.3}");
}
