//! ffmpeg as a child process (through `ffmpeg-sidecar`), always under a
//! deadline: a watchdog kills the process when it passes, so a file that
//! makes ffmpeg spin ends the job instead of the Lambda's time.
//!
//! The binary is the one on `PATH` (a Lambda layer's `/opt/bin`, Debian's
//! package locally); nothing is downloaded.

use std::io::Read;
use std::process::ChildStdout;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ffmpeg_sidecar::child::FfmpegChild;
use ffmpeg_sidecar::command::FfmpegCommand;
pub use ffmpeg_sidecar::event::{FfmpegEvent, LogLevel, Stream, StreamTypeSpecificData};

#[derive(Debug, thiserror::Error)]
pub enum FfmpegError {
    #[error("ffmpeg could not be started (is it installed?): {0}")]
    Spawn(#[source] std::io::Error),
    #[error("ffmpeg ran past its deadline of {0:?} and was killed")]
    Deadline(Duration),
    #[error("ffmpeg failed: {0}")]
    Failed(String),
    #[error("reading ffmpeg's output: {0}")]
    Io(#[source] std::io::Error),
}

/// What ffmpeg printed about its input and how it ended.
#[derive(Debug, Clone, Default)]
pub struct FfmpegReport {
    /// The demuxer names from `Input #0, mov,mp4,m4a,3gp,3g2,mj2, from '…'`.
    pub container: Option<String>,
    pub duration_s: Option<f64>,
    /// The input's streams (output streams are not listed).
    pub streams: Vec<Stream>,
    /// Error-level log lines, most useful first-to-last.
    pub errors: Vec<String>,
    pub success: bool,
}

impl FfmpegReport {
    /// The errors as one line, or `fallback`.
    pub fn reason(&self, fallback: &str) -> String {
        if self.errors.is_empty() { fallback.to_owned() } else { self.errors.join("; ") }
    }
}

/// A running ffmpeg with its watchdog.
pub struct Running {
    child: Arc<Mutex<FfmpegChild>>,
    stop_watchdog: mpsc::Sender<()>,
    watchdog: JoinHandle<bool>,
    events: JoinHandle<FfmpegReport>,
    /// Raw stdout, when the command writes to `-` and the caller reads it.
    pub stdout: Option<ChildStdout>,
    budget: Duration,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running").field("budget", &self.budget).finish_non_exhaustive()
    }
}

/// Starts `ffmpeg -hide_banner -nostdin <args>`, to be killed at `deadline`.
pub fn spawn<I, S>(args: I, deadline: Instant, take_stdout: bool) -> Result<Running, FfmpegError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut command = FfmpegCommand::new();
    command.hide_banner().arg("-nostdin").args(args);
    let mut child = command.spawn().map_err(FfmpegError::Spawn)?;
    let stdout = if take_stdout { child.take_stdout() } else { None };
    let events = child.iter().map_err(|e| FfmpegError::Failed(e.to_string()))?;
    let events = std::thread::spawn(move || collect(events));
    let child = Arc::new(Mutex::new(child));
    let (stop_watchdog, stopped) = mpsc::channel::<()>();
    let budget = deadline.saturating_duration_since(Instant::now());
    let watched = Arc::clone(&child);
    let watchdog = std::thread::spawn(move || match stopped.recv_timeout(budget) {
        Err(mpsc::RecvTimeoutError::Timeout) => {
            let mut child = watched.lock().unwrap_or_else(PoisonError::into_inner);
            // Already gone is fine: it may have exited just now.
            let _ = child.kill();
            true
        }
        _ => false,
    });
    Ok(Running { child, stop_watchdog, watchdog, events, stdout, budget })
}

impl Running {
    /// Waits for ffmpeg to exit (or be killed at the deadline) and reports.
    pub fn finish(mut self) -> Result<FfmpegReport, FfmpegError> {
        // Closing our end of stdout first: a caller that stopped reading must not keep ffmpeg blocked.
        drop(self.stdout.take());
        let report = self.events.join().map_err(|_| FfmpegError::Failed("ffmpeg's log reader panicked".into()))?;
        let status = self.child.lock().unwrap_or_else(PoisonError::into_inner).wait().map_err(FfmpegError::Io)?;
        // The watchdog may have fired after the log ended; it has the last word.
        let _ = self.stop_watchdog.send(());
        let killed = self.watchdog.join().unwrap_or(false);
        if killed {
            return Err(FfmpegError::Deadline(self.budget));
        }
        Ok(FfmpegReport { success: status.success(), ..report })
    }
}

/// Runs ffmpeg to the end and reports; a non-zero exit is `success: false`,
/// not an error, so callers decide what a partial result is worth.
pub fn run<I, S>(args: I, deadline: Instant) -> Result<FfmpegReport, FfmpegError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    spawn(args, deadline, false)?.finish()
}

/// Runs ffmpeg writing to stdout (`-`) and hands each chunk of output to `sink`.
pub fn run_piped<I, S>(args: I, deadline: Instant, mut sink: impl FnMut(&[u8])) -> Result<FfmpegReport, FfmpegError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut running = spawn(args, deadline, true)?;
    if let Some(stdout) = running.stdout.as_mut() {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => sink(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Make sure the process does not outlive us, then report.
                    drop(running.finish());
                    return Err(FfmpegError::Io(e));
                }
            }
        }
    }
    running.finish()
}

fn collect(events: ffmpeg_sidecar::iter::FfmpegIterator) -> FfmpegReport {
    let mut report = FfmpegReport::default();
    for event in events {
        match event {
            FfmpegEvent::ParsedInput(input) => {
                report.container = container_of(&input.raw_log_message);
                report.duration_s = report.duration_s.or(input.duration);
            }
            FfmpegEvent::ParsedDuration(d) if d.input_index == 0 => report.duration_s = Some(d.duration),
            FfmpegEvent::ParsedInputStream(stream) if stream.parent_index == 0 => report.streams.push(stream),
            FfmpegEvent::Log(LogLevel::Error | LogLevel::Fatal, line) | FfmpegEvent::Error(line) if report.errors.len() < 8 => {
                report.errors.push(line.trim().to_owned());
            }
            _ => {}
        }
    }
    report
}

/// `Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'x.mp4':` → `mov,mp4,m4a,3gp,3g2,mj2`.
fn container_of(line: &str) -> Option<String> {
    let after = line.split_once("Input #")?.1;
    let names = after.split_once(", ")?.1;
    let names = names.rsplit_once(", from ")?.0;
    Some(names.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names_come_from_the_input_line() {
        let line = "[info] Input #0, mov,mp4,m4a,3gp,3g2,mj2, from '/tmp/in, with comma.mp4':";
        assert_eq!(container_of(line).as_deref(), Some("mov,mp4,m4a,3gp,3g2,mj2"));
        assert_eq!(container_of("Input #0, wav, from 'a.wav':").as_deref(), Some("wav"));
        assert_eq!(container_of("nothing"), None);
    }

    #[test]
    fn a_process_past_its_deadline_is_killed() {
        // An endless synthetic source: only the watchdog can end it.
        let started = Instant::now();
        let args = ["-f", "lavfi", "-i", "sine=frequency=440", "-f", "null", "-"];
        let outcome = run(args, Instant::now() + Duration::from_millis(300));
        assert!(matches!(outcome, Err(FfmpegError::Deadline(_))), "{outcome:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn piped_output_arrives_and_the_input_is_described() {
        let mut bytes = 0usize;
        let args = ["-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-f", "f32le", "-ac", "1", "-ar", "8000", "-"];
        let report = run_piped(args, Instant::now() + Duration::from_secs(20), |chunk| bytes += chunk.len()).expect("ffmpeg runs");
        assert!(report.success, "{report:?}");
        assert_eq!(bytes, 8000 * 4);
        assert_eq!(report.streams.len(), 1);
        assert!(report.streams[0].is_audio());
    }
}
