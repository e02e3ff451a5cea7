//! Text analysis: decoding (UTF-8, UTF-16 with a BOM, otherwise Latin-1)
//! and counts, shared by `process-text` and the API's synchronous path.

use std::collections::HashMap;

use crate::domain::results::{Heading, Keyword, TextEncoding, TextResult, TextStructure};

const WORDS_PER_MINUTE: f64 = 238.0;
const KEYWORDS: usize = 10;
const MAX_HEADINGS: usize = 100;

/// The commonest function words of each language detected.
const STOP_WORDS: &[(&str, &[&str])] = &[
    (
        "en",
        &[
            "the", "and", "of", "to", "a", "in", "is", "that", "it", "for", "with", "as", "was", "on", "are", "this", "be", "by", "not",
            "or",
        ],
    ),
    (
        "de",
        &[
            "der", "die", "und", "in", "den", "von", "zu", "das", "mit", "sich", "des", "auf", "für", "ist", "im", "dem", "nicht", "ein",
            "eine", "als",
        ],
    ),
    (
        "fr",
        &[
            "le", "la", "les", "de", "des", "et", "un", "une", "du", "en", "est", "que", "qui", "dans", "pour", "pas", "sur", "au", "avec",
            "il",
        ],
    ),
    (
        "es",
        &["el", "la", "de", "que", "y", "en", "los", "del", "se", "las", "por", "un", "para", "con", "no", "una", "su", "al", "es", "lo"],
    ),
    (
        "it",
        &["il", "di", "che", "e", "la", "per", "un", "non", "in", "una", "sono", "mi", "ho", "lo", "ma", "ha", "le", "si", "con", "gli"],
    ),
    ("pt", &["de", "que", "e", "o", "a", "do", "da", "em", "um", "para", "com", "não", "uma", "os", "no", "se", "na", "por", "mais", "as"]),
    (
        "nl",
        &[
            "de", "en", "van", "het", "een", "in", "is", "dat", "op", "te", "zijn", "met", "voor", "niet", "aan", "er", "om", "ook", "als",
            "bij",
        ],
    ),
];

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
    TextResult {
        schema_version: TextResult::SCHEMA_VERSION,
        encoding,
        bom,
        bytes: bytes.len() as u64,
        chars,
        lines,
        words,
        ..TextResult::default()
    }
}

/// Adds what needs the whole text: sentences, reading time, language,
/// keywords, and the structure its MIME type (from the classifier) implies.
pub fn describe(text: &str, mime: &str, result: &mut TextResult) {
    result.sentences = sentences(text);
    result.reading_time_s = (result.words as f64 / WORDS_PER_MINUTE * 60.0 * 10.0).round() / 10.0;
    let mut counts: HashMap<String, u64> = HashMap::new();
    for word in text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
        *counts.entry(word.to_lowercase()).or_default() += 1;
    }
    result.language = language(&counts).to_owned();
    let stop = |w: &str| STOP_WORDS.iter().any(|(_, words)| words.contains(&w));
    let mut keywords: Vec<Keyword> = counts
        .into_iter()
        .filter(|(w, _)| w.chars().count() >= 3 && !stop(w) && !w.chars().all(|c| c.is_numeric()))
        .map(|(word, count)| Keyword { word, count })
        .collect();
    keywords.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.word.cmp(&b.word)));
    keywords.truncate(KEYWORDS);
    result.keywords = keywords;
    result.structure = match mime {
        "application/json" => Some(json_structure(text)),
        "text/csv" => Some(csv_structure(text)),
        "text/markdown" => Some(markdown_structure(text)),
        _ => None,
    };
}

fn sentences(text: &str) -> u64 {
    let mut n = 0;
    let mut chars = text.chars().peekable();
    let mut pending = false;
    while let Some(c) = chars.next() {
        if c.is_alphanumeric() {
            pending = true;
        }
        if matches!(c, '.' | '!' | '?') && pending && chars.peek().is_none_or(|n| n.is_whitespace()) {
            n += 1;
            pending = false;
        }
    }
    n + u64::from(pending)
}

/// The language whose stop words make up the largest share of the text, if they are common enough to trust.
fn language(counts: &HashMap<String, u64>) -> &'static str {
    let total: u64 = counts.values().sum();
    let (code, hits) = STOP_WORDS
        .iter()
        .map(|(code, words)| (*code, words.iter().map(|w| counts.get(*w).copied().unwrap_or(0)).sum::<u64>()))
        .max_by_key(|(_, hits)| *hits)
        .unwrap_or(("und", 0));
    if total >= 5 && hits * 10 >= total { code } else { "und" }
}

fn json_structure(text: &str) -> TextStructure {
    let top_level = match text.trim_start().chars().next() {
        Some('{') => "object",
        Some('[') => "array",
        Some('"') => "string",
        Some('t' | 'f') => "boolean",
        Some('n') => "null",
        _ => "number",
    };
    // Validated without building a tree, so memory stays flat on large files.
    let error = serde_json::from_str::<serde::de::IgnoredAny>(text).err().map(|e| e.to_string());
    TextStructure::Json { valid: error.is_none(), top_level: top_level.into(), error }
}

/// RFC 4180 rows: newlines inside quoted fields do not end a row.
fn csv_structure(text: &str) -> TextStructure {
    let (mut rows, mut columns, mut consistent) = (0u64, 0u64, true);
    let (mut fields, mut quoted, mut row_has_content) = (1u64, false, false);
    let mut end_row = |fields: u64, has_content: bool| {
        if !has_content {
            return;
        }
        rows += 1;
        if rows == 1 {
            columns = fields;
        } else if fields != columns {
            consistent = false;
        }
    };
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => fields += 1,
            '\n' if !quoted => {
                end_row(fields, row_has_content);
                (fields, row_has_content) = (1, false);
                continue;
            }
            '\r' if !quoted => continue,
            _ => {}
        }
        row_has_content = true;
    }
    end_row(fields, row_has_content);
    TextStructure::Csv { rows, columns, consistent }
}

fn markdown_structure(text: &str) -> TextStructure {
    let mut in_code = false;
    let mut headings = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        let level = line.chars().take_while(|c| *c == '#').count();
        if !in_code && (1..=6).contains(&level) && line[level..].starts_with(' ') && headings.len() < MAX_HEADINGS {
            headings.push(Heading { level: level as u8, text: line[level..].trim().to_owned() });
        }
    }
    TextStructure::Markdown { headings }
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

    fn described(text: &str, mime: &str) -> TextResult {
        let mut r = analyse(text.as_bytes());
        describe(text, mime, &mut r);
        r
    }

    #[test]
    fn finds_sentences_language_and_keywords() {
        let r = described("The cat sat on the mat. The cat was happy! Was it? Yes, the cat 3.5 times", "text/plain");
        assert_eq!(r.sentences, 4);
        assert_eq!(r.language, "en");
        assert_eq!(r.keywords[0], Keyword { word: "cat".into(), count: 3 });
        let de = described("Die Katze und der Hund sind in dem Haus, und die Maus ist nicht da.", "text/plain");
        assert_eq!(de.language, "de");
        assert_eq!(described("xyzzy plugh", "text/plain").language, "und");
    }

    #[test]
    fn reads_structure_by_kind() {
        assert_eq!(
            described("{\"a\": [1, 2]}", "application/json").structure,
            Some(TextStructure::Json { valid: true, top_level: "object".into(), error: None })
        );
        assert!(matches!(described("[1, 2", "application/json").structure, Some(TextStructure::Json { valid: false, .. })));
        assert_eq!(
            described("a,b,c\n1,\"x,\ny\",3\n4,5,6\n", "text/csv").structure,
            Some(TextStructure::Csv { rows: 3, columns: 3, consistent: true })
        );
        assert_eq!(described("a,b\n1\n", "text/csv").structure, Some(TextStructure::Csv { rows: 2, columns: 2, consistent: false }));
        let md = described("# Title\n\n```\n# not a heading\n```\n## Part *one*\n#hashtag\n", "text/markdown");
        assert_eq!(
            md.structure,
            Some(TextStructure::Markdown {
                headings: vec![Heading { level: 1, text: "Title".into() }, Heading { level: 2, text: "Part *one*".into() }]
            })
        );
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
