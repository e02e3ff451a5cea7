//! Function and emulator output: every line goes to `{dir}/{name}.log` and,
//! when echoing (`prism up` in the foreground), to the terminal prefixed
//! with the instance's name.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
pub struct LogSink {
    dir: PathBuf,
    echo: bool,
    files: Arc<Mutex<std::collections::HashMap<String, File>>>,
}

impl LogSink {
    pub fn new(dir: &Path, echo: bool) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self { dir: dir.to_owned(), echo, files: Arc::default() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes one line of `file`'s log (`{file}.log`), labelled with `label`,
    /// and echoes it to the terminal when this sink echoes.
    pub fn line(&self, file: &str, label: &str, line: &str) {
        if self.echo {
            println!("{label:>16} | {line}");
        }
        self.file_line(file, label, line);
    }

    /// Writes one line to `{file}.log` only: the emulators' per-request
    /// logs, which would bury the functions' own lines on the terminal.
    pub fn file_line(&self, file: &str, label: &str, line: &str) {
        let mut files = self.files.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !files.contains_key(file) {
            let path = self.dir.join(format!("{file}.log"));
            match OpenOptions::new().create(true).append(true).open(&path) {
                Ok(f) => {
                    files.insert(file.to_owned(), f);
                }
                Err(e) => {
                    eprintln!("cannot write {}: {e}", path.display());
                    return;
                }
            }
        }
        if let Some(f) = files.get_mut(file) {
            let _ = writeln!(f, "{label} | {line}");
        }
    }
}
