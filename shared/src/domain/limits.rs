//! Per-modality size limits, checked by the API before an upload (on the
//! declared size) and by classify after it (on the real size).

use crate::domain::envelope::JobEventEnvelope;
use crate::domain::job::Modality;
use crate::ports::error::{ConfigError, StoreError};
use crate::runtime::config;

/// The largest job event Prism stores. Every stored event is published, and
/// an SNS message holds 256 KiB with its attributes; the DynamoDB item (400
/// KB) and the job item beside it take the same result with room to spare.
/// Processors keep their results well under it (tags, silence spans and
/// keywords are capped); an event over it is refused before anything is
/// written, so it can never be stored and then fail to publish.
pub const MAX_EVENT_BYTES: usize = 240 * 1024;

/// Refuses an event over [`MAX_EVENT_BYTES`].
pub fn check_event_size(event: &JobEventEnvelope) -> Result<(), StoreError> {
    let size = event.to_json().len();
    if size > MAX_EVENT_BYTES {
        return Err(StoreError::Rejected(format!(
            "{} of {size} bytes is over the event limit of {MAX_EVENT_BYTES}",
            event.body.event_type()
        )));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeLimits {
    pub text: u64,
    pub image: u64,
    pub audio: u64,
    pub video: u64,
    pub document: u64,
}

const MIB: u64 = 1024 * 1024;

impl Default for SizeLimits {
    fn default() -> Self {
        Self { text: 64 * MIB, image: 100 * MIB, audio: 500 * MIB, video: 2048 * MIB, document: 200 * MIB }
    }
}

impl SizeLimits {
    /// `MAX_BYTES_{TEXT,IMAGE,AUDIO,VIDEO,DOCUMENT}`, each defaulting as above.
    pub fn from_env() -> Result<Self, ConfigError> {
        let d = Self::default();
        Ok(Self {
            text: config::parsed_or("MAX_BYTES_TEXT", d.text)?,
            image: config::parsed_or("MAX_BYTES_IMAGE", d.image)?,
            audio: config::parsed_or("MAX_BYTES_AUDIO", d.audio)?,
            video: config::parsed_or("MAX_BYTES_VIDEO", d.video)?,
            document: config::parsed_or("MAX_BYTES_DOCUMENT", d.document)?,
        })
    }

    pub fn for_modality(&self, m: Modality) -> u64 {
        match m {
            Modality::Text => self.text,
            Modality::Image => self.image,
            Modality::Audio => self.audio,
            Modality::Video => self.video,
            Modality::Document => self.document,
        }
    }

    /// The most any upload may be, before its modality is known.
    pub fn largest(&self) -> u64 {
        Modality::ALL.iter().map(|m| self.for_modality(*m)).max().unwrap_or(0)
    }
}
