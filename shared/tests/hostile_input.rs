//! Arbitrary bytes and text at every parser a message or an upload reaches:
//! the sniffer, the envelope and command decoders, the S3 notification
//! reader. Each answers with a value or a typed error, never a panic.
//! Bounded: a fixed number of cases per property (proptest's default 256,
//! more for the sniffer), a few seconds in all.

use prism_shared::domain::commands::Command;
use prism_shared::{JobEvent, app::uploads, content::sniff, domain::envelope};
use proptest::prelude::*;

/// The starts of real formats, so mutations land near the interesting branches.
const SEEDS: &[&[u8]] = &[
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff\xe0",
    b"GIF89a",
    b"RIFF\x00\x00\x00\x00WEBP",
    b"RIFF\x00\x00\x00\x00WAVE",
    b"ID3\x04",
    b"OggS\x00\x02",
    b"fLaC",
    b"%PDF-1.7\n",
    b"\x00\x00\x00\x18ftypisom",
    b"\x1aE\xdf\xa3",
    b"\xef\xbb\xbf{\"a\":",
    b"\xff\xfe<\x00?\x00x\x00",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_sniffer_answers_every_byte_string(seed in 0..SEEDS.len(), tail in proptest::collection::vec(any::<u8>(), 0..512), declared in any::<u64>()) {
        let mut bytes = SEEDS[seed].to_vec();
        bytes.extend(tail);
        let _ = sniff::classify(&bytes, declared);
        let _ = sniff::classify(&bytes[..bytes.len() / 2], bytes.len() as u64);
    }
}

proptest! {
    #[test]
    fn envelopes_and_commands_decode_or_refuse(text in ".{0,300}") {
        let _ = envelope::decode::<Command>(&text);
        let _ = envelope::decode::<JobEvent>(&text);
    }

    #[test]
    fn envelope_shaped_json_with_wrong_fields_is_refused_not_panicked_on(
        version in any::<u32>(),
        event_type in "(job\\.[a-z_]{1,12}|[a-z.]{0,20})",
        seq in any::<u64>(),
        payload in "[a-z0-9\"{}:,]{0,40}",
    ) {
        let text = format!(
            r#"{{"schema_version":{version},"event_id":"0196f0a0-0000-7000-8000-000000000001","source":"t","timestamp":"2026-11-27T00:00:00Z","trace_id":"t","job_id":"0196f0a0-0000-7000-8000-0000000000ab","seq":{seq},"event_type":"{event_type}","payload":{payload}}}"#
        );
        let _ = envelope::decode::<JobEvent>(&text);
        let _ = envelope::decode::<Command>(&text);
    }

    #[test]
    fn s3_notifications_read_or_refuse(key in ".{0,200}", size in any::<i64>(), name in "[A-Za-z:]{0,30}") {
        let body = serde_json::json!({"Records": [{
            "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1", "eventTime": "2026-11-27T00:00:00.000Z",
            "eventName": name, "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": "b", "arn": "arn:aws:s3:::b"},
            "object": {"key": key, "size": size, "eTag": "e"}}
        }]})
        .to_string();
        if let Ok(Some(notification)) = uploads::notification(&body) {
            for record in &notification.records {
                if let Some(upload) = uploads::upload_of(record) {
                    prop_assert!(upload.uri.key.starts_with(uploads::UPLOAD_PREFIX));
                }
            }
        }
        let _ = uploads::notification(&key);
    }
}
