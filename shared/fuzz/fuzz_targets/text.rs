//! Any bytes as a text upload: decoded and counted, never a panic; the
//! counts agree with the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prism_shared::content::text;

fuzz_target!(|data: &[u8]| {
    let mut result = text::analyse(data);
    assert_eq!(result.bytes, data.len() as u64);
    let decoded = text::to_utf8(data);
    assert!(result.words <= result.chars.max(1) && result.lines <= result.bytes.max(1), "{result:?}");
    text::describe(&decoded, "text/plain", &mut result);
});
