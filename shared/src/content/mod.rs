//! Content analysis shared by the classifier and the processors.

#[cfg(feature = "ffmpeg")]
pub mod ffmpeg;
pub mod sniff;
pub mod text;
