//! Ogg Opus, decoded in process by `opus-pure` (symphonia has no Opus
//! decoder). Its own Ogg reader is used rather than symphonia's because it
//! carries what Opus needs to come out at the right length: each page's
//! granule position, from which [`Trim`] drops the encoder's pre-skip at the
//! start and the padding at the end (RFC 7845 §4).

use std::io::Cursor;
use std::time::Instant;

use opus_pure::{MAX_PACKET_SAMPLES, OggOpusReader, OggPacket, OpusDecoder, Trim};
use prism_shared::app::processing::Progress;

use crate::analysis::{AudioError, CHECK_EVERY_PACKETS, Meter, MeterThread, check_in};

/// Opus always decodes at 48 kHz; asking for another rate would resample.
pub const OPUS_RATE: u32 = 48_000;

/// Why an Opus file is not one [`OggOpus`] takes on; the caller sends it to ffmpeg.
#[derive(Debug, thiserror::Error)]
pub enum NotHere {
    /// Not an Ogg Opus stream (Opus in Matroska or MP4, say).
    #[error("not Ogg Opus: {0}")]
    NotOgg(opus_pure::Error),
    /// Surround (channel mapping family 1 or 255): one decoder per stream and
    /// a channel mapping, which ffmpeg covers.
    #[error("{channels} channels in mapping family {mapping_family}")]
    Surround { channels: u8, mapping_family: u8 },
}

/// An Ogg Opus stream whose headers have been read.
pub struct OggOpus<'a> {
    reader: OggOpusReader<Cursor<&'a [u8]>>,
}

impl std::fmt::Debug for OggOpus<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OggOpus").field("head", self.reader.head()).finish_non_exhaustive()
    }
}

impl<'a> OggOpus<'a> {
    pub fn open(bytes: &'a [u8]) -> Result<Self, NotHere> {
        let reader = OggOpusReader::new(Cursor::new(bytes)).map_err(NotHere::NotOgg)?;
        let head = reader.head();
        if head.mapping_family != 0 {
            return Err(NotHere::Surround { channels: head.channel_count, mapping_family: head.mapping_family });
        }
        Ok(Self { reader })
    }

    /// Decodes the whole stream through a [`Meter`].
    pub fn decode(self, declared_frames: Option<u64>, deadline: Instant, progress: &Progress) -> Result<(Meter, Vec<String>), AudioError> {
        let mut reader = self.reader;
        let head = reader.head().clone();
        let channels = usize::from(head.channel_count);
        let opus_error = |e: opus_pure::Error| AudioError::Corrupt(e.to_string());
        // The header's output gain is applied, as players (and ffmpeg) do.
        let mut decoder: OpusDecoder = head.decoder(OPUS_RATE as i32).map_err(opus_error)?;
        let mut trim = Trim::new(&head, OPUS_RATE as i32, channels).map_err(opus_error)?;
        let mut meter = MeterThread::spawn(Meter::new(OPUS_RATE, channels)?);
        let mut block = vec![0.0f32; MAX_PACKET_SAMPLES * channels];
        let mut packet = OggPacket::default();
        let mut warnings = Vec::new();
        let (mut packets, mut bad_packets, mut last_frames) = (0u64, 0u64, 960usize);
        loop {
            match reader.read_packet_into(&mut packet) {
                Ok(true) => {}
                Ok(false) => break,
                // A cut or damaged page after some audio: keep what decoded.
                Err(e) if trim.samples_emitted() > 0 => {
                    warnings.push(format!("stopped at a damaged part of the file: {e}"));
                    break;
                }
                Err(e) => return Err(AudioError::Corrupt(e.to_string())),
            }
            packets += 1;
            if packets.is_multiple_of(CHECK_EVERY_PACKETS) {
                check_in(deadline, progress, declared_frames.map(|total| trim.samples_emitted() as f32 / total.max(1) as f32))?;
            }
            let frames = match decoder.decode(&packet.data, MAX_PACKET_SAMPLES, &mut block) {
                Ok(n) => n,
                // A damaged packet is concealed (as a lost one would be), so that
                // the timeline, and the trim at the end, stay right.
                Err(_) => {
                    bad_packets += 1;
                    decoder.decode(&[], last_frames, &mut block).map_err(opus_error)?
                }
            };
            last_frames = frames.max(1);
            meter.push(trim.keep(&packet, &block[..frames * channels]));
        }
        if bad_packets > 0 {
            warnings.push(format!("{bad_packets} of {packets} packets could not be decoded and were concealed"));
        }
        Ok((meter.finish(), warnings))
    }
}
