//! Helpers for tests of the functions: sample events from `events/`.

use std::path::PathBuf;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The project's `events/` folder.
pub fn events_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../events")
}

/// Reads `events/{name}` as `T`, checking that it survives a round trip
/// through `T` unchanged (so the sample and the type agree on every field).
pub fn sample_event<T: DeserializeOwned + Serialize>(name: &str) -> T {
    let path = events_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let event: T = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not a valid {}: {e}", std::any::type_name::<T>()));
    let once = serde_json::to_value(&event).unwrap_or_else(|e| panic!("serialising {name}: {e}"));
    let again: T = serde_json::from_value(once.clone()).unwrap_or_else(|e| panic!("re-reading {name}: {e}"));
    let twice = serde_json::to_value(&again).unwrap_or_else(|e| panic!("serialising {name}: {e}"));
    assert_eq!(once, twice, "{name} changed in a round trip");
    event
}
