//! Any body on the intake queue: read as an S3 notification or refused,
//! never a panic; every upload found in it is under `uploads/` and names an
//! owner.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prism_shared::app::uploads;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else { return };
    let Ok(Some(event)) = uploads::notification(body) else { return };
    for upload in event.records.iter().filter_map(uploads::upload_of) {
        assert!(upload.uri.key.starts_with(uploads::UPLOAD_PREFIX), "{}", upload.uri.key);
        assert!(!upload.owner.is_empty());
        let _ = upload.input();
    }
});
