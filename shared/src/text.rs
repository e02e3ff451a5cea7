//! Text analysis: decoding (UTF-8, UTF-16 with a BOM, otherwise Latin-1)
//! and counts, shared by `process-text` and the API's synchronous path.

use crate::results::{TextEncoding, TextResult};

/// The text's characters, its encoding and whether it had a BOM. Never
/// fails: bytes that are neither UTF-8 nor BOM-marked UTF-16 are read as
/// Latin-1, which maps every byte to a character.
fn decode(bytes: &[u8]) -> (TextEncoding, bool, Box<dyn Iterator<Item = char> + '_>) {
    if let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
        (TextEncoding::Utf8, true, Box::new(utf8_lossy(rest)))
    } else if let Some(rest) = bytes.strip_prefix(b"\xFF\xFE") {
        (TextEncoding::Utf16le, true, Box::new(utf16(rest, u16::from_le_bytes)))
    } else if let Some(rest) = bytes.strip_prefix(b"\xFE\xFF") {
        (TextEncoding::Utf16be, true, Box::new(utf16(rest, u16::from_be_bytes)))
    } else if let Ok(text) = std::str::from_utf8(bytes) {
        (TextEncoding::Utf8, false, Box::new(text.chars()))
    } else {
        (TextEncoding::Latin1, false, Box::new(bytes.iter().map(|&b| char::from(b))))
    }
}

/// Decodes and counts in one pass, without allocating.
pub fn analyse(bytes: &[u8]) -> TextResult {
    let (encoding, bom, chars) = decode(bytes);
    let (chars, lines, words) = count(chars);
    TextResult { schema_version: TextResult::SCHEMA_VERSION, encoding, bom, bytes: bytes.len() as u64, chars, lines, words }
}

/// The text as UTF-8, whatever it was encoded in.
pub fn to_utf8(bytes: &[u8]) -> String {
    decode(bytes).2.collect()
}

fn utf8_lossy(bytes: &[u8]) -> impl Iterator<Item = char> + '_ {
    bytes.utf8_chunks().flat_map(|chunk| chunk.valid().chars().chain((!chunk.invalid().is_empty()).then_some(char::REPLACEMENT_CHARACTER)))
}

fn utf16(bytes: &[u8], unit: fn([u8; 2]) -> u16) -> impl Iterator<Item = char> + '_ {
    let units = bytes.chunks_exact(2).map(move |pair| unit([pair[0], pair[1]]));
    char::decode_utf16(units).map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
}

/// `(chars, lines, words)` in one pass without allocating.
fn count(chars: impl Iterator<Item = char>) -> (u64, u64, u64) {
    let (mut n, mut newlines, mut words) = (0u64, 0u64, 0u64);
    let (mut in_word, mut last) = (false, '\n');
    for c in chars {
        n += 1;
        if c == '\n' {
            newlines += 1;
        }
        let space = c.is_whitespace();
        if !space && !in_word {
            words += 1;
        }
        in_word = !space;
        last = c;
    }
    let unterminated = u64::from(n > 0 && last != '\n');
    (n, newlines + unterminated, words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_supported_encoding() {
        let r = analyse(b"\xEF\xBB\xBFone two\n");
        assert_eq!((r.encoding, r.bom, r.words, r.lines, r.chars), (TextEncoding::Utf8, true, 2, 1, 8));
        let mut be = vec![0xFE, 0xFF];
        be.extend("a b c".encode_utf16().flat_map(u16::to_be_bytes));
        let r = analyse(&be);
        assert_eq!((r.encoding, r.words, r.chars), (TextEncoding::Utf16be, 3, 5));
        let r = analyse(b"na\xefve caf\xe9");
        assert_eq!((r.encoding, r.words, r.chars), (TextEncoding::Latin1, 2, 10));
    }

    #[test]
    fn converts_every_encoding_to_utf8() {
        assert_eq!(to_utf8(b"caf\xe9"), "caf\u{e9}");
        assert_eq!(to_utf8(b"\xFF\xFEh\0i\0"), "hi");
        assert_eq!(to_utf8(b"\xEF\xBB\xBFok\xFF"), "ok\u{FFFD}");
    }

    #[test]
    fn counts_lines_like_people_do() {
        assert_eq!(analyse(b"").lines, 0);
        assert_eq!(analyse(b"a").lines, 1);
        assert_eq!(analyse(b"a\n").lines, 1);
        assert_eq!(analyse(b"a\n\nb").lines, 3);
        assert_eq!(analyse(b"  spaced\t\tout  words ").words, 3);
    }
}
