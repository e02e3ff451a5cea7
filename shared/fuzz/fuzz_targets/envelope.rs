//! Any message body: decoded as a command or a job event, or refused with
//! an error, never a panic; what decodes encodes back to the same envelope.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prism_shared::JobEvent;
use prism_shared::domain::commands::Command;
use prism_shared::domain::envelope::{self, Envelope};

fn round_trips<B>(body: &str)
where
    B: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
{
    if let Ok(decoded) = envelope::decode::<B>(body) {
        let again: Envelope<B> = envelope::decode(&decoded.to_json()).expect("an envelope's own JSON decodes");
        assert_eq!(again, decoded);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else { return };
    round_trips::<Command>(body);
    round_trips::<JobEvent>(body);
});
