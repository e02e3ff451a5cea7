//! Images made and checked with ffmpeg (which the processors need anyway), so
//! the end-to-end tests compile no image codec of their own.

use std::io::Write as _;
use std::process::{Command, Stdio};

/// A `width` × `height` gradient PNG.
pub fn png(width: u32, height: u32) -> Vec<u8> {
    prism_cloud::images::gradient_png(width, height, 128).expect("png encodes")
}

/// A `width` × `height` JPEG of ffmpeg's test pattern.
pub fn jpeg(width: u32, height: u32) -> Vec<u8> {
    let size = format!("testsrc2=size={width}x{height}");
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-f", "lavfi", "-i", &size, "-frames:v", "1", "-f", "image2pipe", "-c:v", "mjpeg", "pipe:1"])
        .output()
        .expect("ffmpeg runs");
    assert!(out.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// Runs `program` with `input` on its standard input.
fn piped(program: &str, args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    // A decoder may stop reading early (and close the pipe) on a broken file: that is its answer, not ours.
    let _ = child.stdin.take().expect("stdin").write_all(input);
    child.wait_with_output().expect("exits")
}

/// The pixel size of an image after decoding every byte of it: panics when
/// the bytes do not decode as an image without errors.
pub fn decoded_size(bytes: &[u8]) -> (u32, u32) {
    let decoded = piped("ffmpeg", &["-hide_banner", "-v", "error", "-xerror", "-i", "pipe:0", "-f", "null", "-"], bytes);
    assert!(decoded.status.success() && decoded.stderr.is_empty(), "does not decode: {}", String::from_utf8_lossy(&decoded.stderr));
    let probed = piped("ffprobe", &["-v", "error", "-show_entries", "stream=width,height", "-of", "csv=p=0", "-i", "pipe:0"], bytes);
    let text = String::from_utf8_lossy(&probed.stdout);
    let (w, h) = text.trim().split_once(',').unwrap_or_else(|| panic!("no size from ffprobe: {text:?}"));
    (w.parse().expect("width"), h.parse().expect("height"))
}

/// An image decoded to 8-bit grey levels: width, height and one byte a pixel, row by row.
pub fn grey_pixels(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let (width, height) = decoded_size(bytes);
    let raw = piped("ffmpeg", &["-hide_banner", "-v", "error", "-i", "pipe:0", "-f", "rawvideo", "-pix_fmt", "gray", "pipe:1"], bytes);
    assert!(raw.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&raw.stderr));
    assert_eq!(raw.stdout.len(), (width * height) as usize, "one byte a pixel");
    (width, height, raw.stdout)
}
