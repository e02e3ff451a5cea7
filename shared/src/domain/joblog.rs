//! A job's log: lines a processor writes about its work (what it decoded,
//! what it skipped, what it wrote), kept in the job's sequence-numbered event
//! log as `job.log` events so they page, replay and stream like every other
//! event. The volume per job is capped.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use strum::{Display, EnumString, IntoStaticStr};

/// The most log lines a job keeps, the "N lines dropped" line included.
pub const MAX_LOG_LINES: u32 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Display, EnumString, IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    pub at: DateTime<Utc>,
    pub level: LogLevel,
    pub message: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, serde_json::Value>,
}

impl LogLine {
    pub fn new(level: LogLevel, message: impl Into<String>, now: DateTime<Utc>) -> Self {
        Self { at: now, level, message: message.into(), fields: BTreeMap::new() }
    }

    pub fn field(mut self, name: &str, value: impl Into<serde_json::Value>) -> Self {
        self.fields.insert(name.to_owned(), value.into());
        self
    }
}

/// The lines an attempt has written but not yet recorded, within the room
/// the job's log has left: once it is full, lines are counted instead of
/// kept, and the last flush ends with one "N lines dropped" line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogBuffer {
    pending: Vec<LogLine>,
    /// Lines the job may still record; the last is kept for the dropped line.
    room: u32,
    dropped: u32,
}

impl LogBuffer {
    /// A buffer for a job that has already recorded `recorded` lines.
    pub fn for_job(recorded: u32) -> Self {
        Self { pending: Vec::new(), room: MAX_LOG_LINES.saturating_sub(recorded), dropped: 0 }
    }

    pub fn push(&mut self, line: LogLine) {
        if self.room <= 1 {
            self.dropped += 1;
        } else {
            self.room -= 1;
            self.pending.push(line);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.dropped == 0
    }

    /// The lines to record now; with `last`, the dropped line too.
    pub fn take(&mut self, last: bool, now: DateTime<Utc>) -> Vec<LogLine> {
        let mut lines = std::mem::take(&mut self.pending);
        if last && self.dropped > 0 && self.room > 0 {
            self.room -= 1;
            let dropped = std::mem::take(&mut self.dropped);
            let s = if dropped == 1 { "" } else { "s" };
            lines.push(LogLine::new(LogLevel::Warn, format!("{dropped} line{s} dropped"), now).field("dropped", dropped));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_log_ends_with_one_dropped_line_and_never_passes_the_cap() {
        let now = Utc::now();
        let mut buffer = LogBuffer::for_job(90);
        for i in 0..25 {
            buffer.push(LogLine::new(LogLevel::Info, format!("line {i}"), now));
        }
        let first = buffer.take(false, now);
        assert_eq!(first.len(), 9, "room for nine before the dropped line");
        let last = buffer.take(true, now);
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].message, "16 lines dropped");
        assert_eq!(90 + first.len() + last.len(), MAX_LOG_LINES as usize);
        assert!(buffer.is_empty());
    }

    #[test]
    fn a_job_whose_log_is_full_records_nothing_more() {
        let now = Utc::now();
        let mut buffer = LogBuffer::for_job(MAX_LOG_LINES);
        buffer.push(LogLine::new(LogLevel::Info, "late", now));
        // The dropped line itself does not fit: the job's log is already at the cap.
        assert_eq!(buffer.take(true, now), Vec::new());
    }
}
