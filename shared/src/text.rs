//! Text analysis: decoding (UTF-8, UTF-16 with a BOM, otherwise Latin-1)
//! and counts, shared by `process-text` and the API's synchronous path.

use crate::results::{TextEncoding, TextResult};

/// Decodes and counts. Never fails: bytes that are neither UTF-8 nor
/// BOM-marked UTF-16 are read as Latin-1, which maps every byte to a character.
pub fn analyse(bytes: &[u8]) -> TextResult {
    let mut result = TextResult { schema_version: TextResult::SCHEMA_VERSION, bytes: bytes.len() as u64, ..TextResult::default() };
    let counts = if let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
        result.bom = true;
        result.encoding = TextEncoding::Utf8;
        count(String::from_utf8_lossy(rest).chars())
    } else if let Some(rest) = bytes.strip_prefix(b"\xFF\xFE") {
        result.bom = true;
        result.encoding = TextEncoding::Utf16le;
        count(utf16(rest, u16::from_le_bytes))
    } else if let Some(rest) = bytes.strip_prefix(b"\xFE\xFF") {
        result.bom = true;
        result.encoding = TextEncoding::Utf16be;
        count(utf16(rest, u16::from_be_bytes))
    } else if let Ok(text) = std::str::from_utf8(bytes) {
        result.encoding = TextEncoding::Utf8;
        count(text.chars())
    } else {
        result.encoding = TextEncoding::Latin1;
        count(bytes.iter().map(|&b| char::from(b)))
    };
    (result.chars, result.lines, result.words) = counts;
    result
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
    fn counts_lines_like_people_do() {
        assert_eq!(analyse(b"").lines, 0);
        assert_eq!(analyse(b"a").lines, 1);
        assert_eq!(analyse(b"a\n").lines, 1);
        assert_eq!(analyse(b"a\n\nb").lines, 3);
        assert_eq!(analyse(b"  spaced\t\tout  words ").words, 3);
    }
}
