//! Any first bytes of any upload: classified or refused with a reason,
//! never a panic, and the same answer every time.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prism_shared::content::sniff::{self, SNIFF_BYTES};

fuzz_target!(|data: &[u8]| {
    let head = &data[..data.len().min(SNIFF_BYTES)];
    // The whole file, and a head of a larger one.
    for size in [data.len() as u64, data.len() as u64 + (1 << 20)] {
        let first = sniff::classify(head, size).map(|c| (c.modality, c.mime));
        let again = sniff::classify(head, size).map(|c| (c.modality, c.mime));
        assert_eq!(first.as_ref().ok(), again.as_ref().ok());
    }
    if let Ok(name) = std::str::from_utf8(data) {
        let _ = sniff::undecoded_name(name);
    }
});
