//! Content sniffing: what a file is, from its first bytes and its size alone
//! (never its name). Used by `classify` and by the API's synchronous path.
//!
//! [`SNIFF_BYTES`] is what callers fetch with a ranged GET: every signature
//! below fits inside it.

use crate::domain::job::{Classification, Modality};

/// How many leading bytes the sniffer looks at.
pub const SNIFF_BYTES: usize = 4096;

/// What [`sniff`] could not classify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SniffError {
    #[error("empty upload")]
    Empty,
    #[error("unsupported content")]
    Unsupported,
}

impl SniffError {
    /// The stable code a failed job carries.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Empty => "empty_upload",
            Self::Unsupported => "unsupported_content",
        }
    }
}

/// Formats recognised by their bytes that no processor decodes yet (MIME,
/// name, file extensions): an upload of one ends in classify with
/// `unsupported_format` instead of being routed to fail in a processor, and
/// the API refuses a submission whose file name says it is one.
const UNDECODED: &[(&str, &str, &[&str])] = &[("image/avif", "AVIF", &["avif"]), ("image/heic", "HEIC", &["heic", "heif"])];

/// Why content of `mime` cannot be processed, if it cannot.
pub fn undecoded_mime(mime: &str) -> Option<String> {
    UNDECODED.iter().find(|(m, _, _)| *m == mime).map(|(_, name, _)| unsupported_message(name))
}

/// Why a file called `file_name` cannot be processed, if its extension says so.
pub fn undecoded_name(file_name: &str) -> Option<String> {
    let (_, extension) = file_name.rsplit_once('.')?;
    let extension = extension.to_ascii_lowercase();
    UNDECODED.iter().find(|(_, _, extensions)| extensions.contains(&extension.as_str())).map(|(_, name, _)| unsupported_message(name))
}

fn unsupported_message(format: &str) -> String {
    format!("{format} images are recognised but Prism does not decode them yet; convert to JPEG, PNG or WebP")
}

/// The verdict before the time estimate is attached.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sniffed {
    pub modality: Modality,
    pub mime: &'static str,
    pub confidence: f32,
}

const fn found(modality: Modality, mime: &'static str, confidence: f32) -> Sniffed {
    Sniffed { modality, mime, confidence }
}

/// Classifies `head` (the first bytes of an object of `size` bytes) and
/// estimates how long processing will take.
pub fn classify(head: &[u8], size: u64) -> Result<Classification, SniffError> {
    let s = sniff(head, size)?;
    Ok(Classification {
        modality: s.modality,
        mime: s.mime.to_owned(),
        confidence: s.confidence,
        estimated_seconds: estimate_seconds(s.modality, size),
    })
}

/// A first estimate of processing time from throughputs per modality, to be
/// calibrated from measured runs.
pub fn estimate_seconds(modality: Modality, size: u64) -> f64 {
    let (fixed_s, bytes_per_s) = match modality {
        Modality::Text => (0.05, 50e6),
        Modality::Image => (0.2, 20e6),
        Modality::Audio => (0.3, 10e6),
        Modality::Video => (1.0, 5e6),
        Modality::Document => (0.3, 2e6),
    };
    fixed_s + size as f64 / bytes_per_s
}

/// Classifies content by its leading bytes.
pub fn sniff(head: &[u8], size: u64) -> Result<Sniffed, SniffError> {
    if size == 0 || head.is_empty() {
        return Err(SniffError::Empty);
    }
    // A UTF-16 BOM (FF FE) is also a valid MPEG audio frame sync: BOMs go first.
    byte_order_mark(head).or_else(|| binary_signature(head)).or_else(|| text(head)).ok_or(SniffError::Unsupported)
}

fn binary_signature(h: &[u8]) -> Option<Sniffed> {
    use Modality::*;
    let at = |offset: usize, sig: &[u8]| h.get(offset..offset + sig.len()) == Some(sig);
    if at(0, b"\xFF\xD8\xFF") {
        return Some(found(Image, "image/jpeg", 1.0));
    }
    if at(0, b"\x89PNG\r\n\x1A\n") {
        return Some(found(Image, "image/png", 1.0));
    }
    if at(0, b"GIF87a") || at(0, b"GIF89a") {
        return Some(found(Image, "image/gif", 1.0));
    }
    if at(0, b"RIFF") {
        return match h.get(8..12) {
            Some(b"WEBP") => Some(found(Image, "image/webp", 1.0)),
            Some(b"WAVE") => Some(found(Audio, "audio/wav", 1.0)),
            Some(b"AVI ") => Some(found(Video, "video/x-msvideo", 1.0)),
            _ => None,
        };
    }
    if at(0, b"II*\0") || at(0, b"MM\0*") {
        return Some(found(Image, "image/tiff", 1.0));
    }
    // BMP's two-letter magic is weak, so also require its reserved fields to be zero.
    if at(0, b"BM") && h.get(6..10) == Some(&[0, 0, 0, 0]) {
        return Some(found(Image, "image/bmp", 0.9));
    }
    if at(4, b"ftyp") {
        return iso_bmff(h);
    }
    if at(0, b"\x1A\x45\xDF\xA3") {
        return Some(if contains(h, b"webm") { found(Video, "video/webm", 0.95) } else { found(Video, "video/x-matroska", 0.9) });
    }
    if at(0, b"fLaC") {
        return Some(found(Audio, "audio/flac", 1.0));
    }
    if at(0, b"OggS") {
        return Some(if contains(h, b"OpusHead") {
            found(Audio, "audio/ogg; codecs=opus", 1.0)
        } else if contains(h, b"\x01vorbis") {
            found(Audio, "audio/ogg; codecs=vorbis", 1.0)
        } else if contains(h, b"\x80theora") {
            found(Video, "video/ogg", 0.95)
        } else {
            found(Audio, "audio/ogg", 0.7)
        });
    }
    if at(0, b"ID3") {
        return Some(found(Audio, "audio/mpeg", 0.95));
    }
    if at(0, b"%PDF-") {
        return Some(found(Document, "application/pdf", 1.0));
    }
    if let Some(ts) = mpeg_transport_stream(h) {
        return Some(ts);
    }
    mpeg_audio_frame(h)
}

/// MPEG transport streams (broadcast `.ts`, camcorders' and Blu-ray's
/// `.mts`/`.m2ts`): 188-byte packets each starting with the sync byte 0x47,
/// or 192-byte ones with a 4-byte timecode before it. One 0x47 is a
/// letter `G`, so four packets in step are asked for.
fn mpeg_transport_stream(h: &[u8]) -> Option<Sniffed> {
    const SYNC: u8 = 0x47;
    let in_step = |first: usize, stride: usize| (0..4).all(|i| h.get(first + i * stride) == Some(&SYNC));
    (in_step(0, 188) || in_step(4, 192)).then_some(found(Modality::Video, "video/mp2t", 0.9))
}

/// MP4, MOV, M4A, HEIC and AVIF all start with an `ftyp` box; its brands say which.
fn iso_bmff(h: &[u8]) -> Option<Sniffed> {
    use Modality::*;
    let box_len = h.get(0..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)?;
    let end = box_len.min(h.len());
    let brands: Vec<&[u8]> = std::iter::once(h.get(8..12)?).chain(h.get(16..end).unwrap_or_default().chunks_exact(4)).collect();
    let has = |b: &[u8]| brands.contains(&b);
    let major = brands[0];
    Some(if has(b"avif") || has(b"avis") {
        found(Image, "image/avif", 1.0)
    } else if [b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"].iter().any(|b| major == *b) {
        found(Image, "image/heic", 0.95)
    } else if [b"M4A ", b"M4B ", b"M4P ", b"F4A "].iter().any(|b| major == *b) {
        found(Audio, "audio/mp4", 1.0)
    } else if major == b"qt  " {
        found(Video, "video/quicktime", 1.0)
    } else if major.starts_with(b"3g") {
        found(Video, "video/3gpp", 0.9)
    } else {
        found(Video, "video/mp4", 0.9)
    })
}

/// MPEG audio (MP3 without ID3) and ADTS AAC: an 11-bit frame sync.
fn mpeg_audio_frame(h: &[u8]) -> Option<Sniffed> {
    let (b0, b1, b2) = (*h.first()?, *h.get(1)?, *h.get(2)?);
    if b0 != 0xFF || b1 & 0xE0 != 0xE0 {
        return None;
    }
    let version = (b1 >> 3) & 0b11;
    let layer = (b1 >> 1) & 0b11;
    if layer == 0 {
        // ADTS: MPEG version bit pattern 0b1x, sampling index below 13.
        return (version & 0b10 != 0 && (b2 >> 2) & 0x0F < 13).then_some(found(Modality::Audio, "audio/aac", 0.8));
    }
    let bitrate_index = b2 >> 4;
    let rate_index = (b2 >> 2) & 0b11;
    (version != 0b01 && bitrate_index != 0x0F && rate_index != 0b11).then_some(found(Modality::Audio, "audio/mpeg", 0.8))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Text: a BOM, or bytes with no NULs and few control characters that are
/// valid UTF-8 (allowing a character cut at the sample's end) or plausible Latin-1.
fn byte_order_mark(h: &[u8]) -> Option<Sniffed> {
    if let Some(body) = h.strip_prefix(b"\xEF\xBB\xBF") {
        return Some(text_kind(body, 1.0));
    }
    (h.starts_with(b"\xFF\xFE") || h.starts_with(b"\xFE\xFF")).then(|| found(Modality::Text, "text/plain", 1.0))
}

fn text(h: &[u8]) -> Option<Sniffed> {
    if h.contains(&0) {
        return None;
    }
    let controls = h.iter().filter(|&&b| (b < 0x20 && !matches!(b, b'\n' | b'\r' | b'\t' | 0x0C)) || b == 0x7F).count();
    if controls * 100 > h.len() {
        return None;
    }
    let utf8 = match std::str::from_utf8(h) {
        Ok(_) => true,
        // A multi-byte character cut off by the end of the sample.
        Err(e) => e.error_len().is_none() && h.len() - e.valid_up_to() < 4,
    };
    if utf8 {
        return Some(text_kind(h, 0.95));
    }
    // Latin-1: the C1 range 0x80..0xA0 is almost never used in real text.
    let c1 = h.iter().filter(|&&b| (0x80..0xA0).contains(&b)).count();
    (c1 * 20 <= h.len()).then(|| text_kind(h, 0.7))
}

fn text_kind(body: &[u8], confidence: f32) -> Sniffed {
    let trimmed = body.trim_ascii_start();
    let lower: Vec<u8> = trimmed.iter().take(64).map(u8::to_ascii_lowercase).collect();
    let mime = if trimmed.starts_with(b"{") || trimmed.starts_with(b"[") {
        "application/json"
    } else if lower.starts_with(b"<!doctype html") || lower.starts_with(b"<html") {
        "text/html"
    } else if lower.starts_with(b"<?xml") {
        "application/xml"
    } else if looks_like_markdown(trimmed) {
        "text/markdown"
    } else if looks_like_csv(trimmed) {
        "text/csv"
    } else {
        "text/plain"
    };
    found(Modality::Text, mime, confidence)
}

fn looks_like_markdown(t: &[u8]) -> bool {
    t.split(|&b| b == b'\n').take(40).any(|line| line.starts_with(b"# ") || line.starts_with(b"## ") || line.starts_with(b"```"))
}

/// At least two complete lines sharing the same number (≥ 1) of commas.
fn looks_like_csv(t: &[u8]) -> bool {
    let mut lines = t.split(|&b| b == b'\n').filter(|l| !l.is_empty());
    let Some(first) = lines.next() else {
        return false;
    };
    let commas = |l: &[u8]| l.iter().filter(|&&b| b == b',').count();
    let n = commas(first);
    let rest: Vec<_> = lines.take(10).collect();
    n >= 1 && rest.len() >= 2 && rest[..rest.len() - 1].iter().all(|l| commas(l) == n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Modality::*;

    fn m(head: &[u8]) -> (Modality, &'static str) {
        let s = sniff(head, head.len() as u64).expect("recognised");
        (s.modality, s.mime)
    }

    #[test]
    fn recognises_common_signatures() {
        assert_eq!(m(b"\x89PNG\r\n\x1A\n\0\0\0\rIHDR"), (Image, "image/png"));
        assert_eq!(m(b"\xFF\xD8\xFF\xE0\0\x10JFIF"), (Image, "image/jpeg"));
        assert_eq!(m(b"RIFF\x24\0\0\0WAVEfmt "), (Audio, "audio/wav"));
        assert_eq!(m(b"RIFF\x24\0\0\0WEBPVP8 "), (Image, "image/webp"));
        assert_eq!(m(b"\0\0\0\x20ftypisom\0\0\x02\0isomiso2avc1mp41"), (Video, "video/mp4"));
        assert_eq!(m(b"\0\0\0\x20ftypM4A \0\0\x02\0M4A isomiso2\0\0\0\0"), (Audio, "audio/mp4"));
        assert_eq!(m(b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf"), (Image, "image/avif"));
        assert!(undecoded_mime("image/avif").is_some() && undecoded_mime("image/png").is_none());
        assert!(undecoded_name("IMG_0001.HEIC").is_some() && undecoded_name("a.heif").is_some() && undecoded_name("heic.jpg").is_none());
        assert_eq!(m(b"\x1A\x45\xDF\xA3\x9F\x42\x86\x81\x01\x42\x82\x84webm"), (Video, "video/webm"));
        assert_eq!(m(b"ID3\x04\0\0\0\0\0\0"), (Audio, "audio/mpeg"));
        assert_eq!(m(b"\xFF\xFB\x90\x64\0\0"), (Audio, "audio/mpeg"));
        assert_eq!(m(b"\xFF\xF1\x50\x80\x02\x1F\xFC"), (Audio, "audio/aac"));
        assert_eq!(m(b"fLaC\0\0\0\x22"), (Audio, "audio/flac"));
        assert_eq!(m(b"%PDF-1.7\n"), (Document, "application/pdf"));
        let packets = |stride: usize, sync_at: usize| {
            let mut ts = vec![0xFFu8; 4 * stride];
            (0..4).for_each(|i| ts[i * stride + sync_at] = 0x47);
            ts
        };
        assert_eq!(m(&packets(188, 0)), (Video, "video/mp2t"), "a transport stream");
        assert_eq!(m(&packets(192, 4)), (Video, "video/mp2t"), "M2TS: a timecode before each packet");
    }

    #[test]
    fn a_text_starting_with_g_is_not_a_transport_stream() {
        let mut text = b"Good morning. ".repeat(60);
        text[188] = b'G';
        assert_eq!(m(&text), (Text, "text/plain"), "one packet's worth of G is not four in step");
    }

    #[test]
    fn recognises_text_and_its_kinds() {
        assert_eq!(m(b"hello world\n"), (Text, "text/plain"));
        assert_eq!(m(b"  {\"a\": 1}"), (Text, "application/json"));
        assert_eq!(m(b"a,b,c\n1,2,3\n4,5,6\n"), (Text, "text/csv"));
        assert_eq!(m(b"# Title\n\nBody"), (Text, "text/markdown"));
        assert_eq!(m(b"<!DOCTYPE html><html>"), (Text, "text/html"));
        assert_eq!(m(b"\xFF\xFEh\0i\0"), (Text, "text/plain"));
        assert_eq!(m("caf\u{e9} na\u{ef}ve".as_bytes()), (Text, "text/plain"));
        assert_eq!(m(b"caf\xE9 na\xEFve"), (Text, "text/plain"));
        // A multi-byte character cut by the sample's end is still UTF-8.
        assert_eq!(m(&"\u{e9}t\u{e9}".as_bytes()[..4]), (Text, "text/plain"));
    }

    #[test]
    fn refuses_empty_and_binary_noise() {
        assert_eq!(sniff(b"", 0), Err(SniffError::Empty));
        assert_eq!(sniff(b"\0\x01\x02\x03\x04garbage", 12), Err(SniffError::Unsupported));
    }

    #[test]
    fn never_panics_on_any_prefix_of_any_signature() {
        let samples: [&[u8]; 6] = [
            b"\0\0\0\x20ftypisom\0\0\x02\0isomiso2avc1mp41",
            b"\x1A\x45\xDF\xA3\x9F\x42\x86\x81\x01\x42\x82\x84webm",
            b"RIFF\x24\0\0\0WAVEfmt ",
            b"\xFF\xFB\x90\x64\0\0",
            b"\xFF\xFFftyp\xFF\xFF\xFF\xFF",
            b"\xEF\xBB\xBF{\"x\":1}",
        ];
        for s in samples {
            for n in 0..=s.len() {
                let _ = sniff(&s[..n], n as u64);
            }
        }
        // Pseudo-random bytes of every length, from a fixed-seed xorshift.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for len in 0..512 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = sniff(&bytes, len as u64);
        }
    }
}
