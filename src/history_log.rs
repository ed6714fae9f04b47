//! The history's file in the state directory: one JSON event per line, appended as changes
//! happen, rotated by size, read back at start so `since` survives a restart.
//!
//! Rotation moves the file to `history.jsonl.1` (replacing the previous one) and starts the new
//! file with the event that set each address's current values, so the file alone always holds
//! every address's `since`: the disk use stays under about twice the limit plus one line per
//! address, and no restart forgets when a state began.

use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};

use crate::core::history::{Event, History};
use crate::state_file;

/// The history's file name in `global.state_dir`.
pub const HISTORY_FILE: &str = "history.jsonl";

/// What [`read`] found in the file.
#[derive(Debug, Default)]
pub struct ReadBack {
    pub events: Vec<Event>,
    /// Line numbers of lines that were not an event (a crash in the middle of a write, an edit).
    pub skipped: Vec<u64>,
}

/// Reads every event of the history file in `state_dir`; a missing file is an empty history.
/// With the file missing but a rotated one there (a crash in the middle of a rotation), the
/// rotated one is read.
pub fn read(state_dir: &Path) -> std::io::Result<ReadBack> {
    let path = state_dir.join(HISTORY_FILE);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => match File::open(rotated(&path)) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(ReadBack::default()),
            Err(err) => return Err(err),
        },
        Err(err) => return Err(err),
    };
    let mut read = ReadBack::default();
    for (number, line) in (1u64..).zip(BufReader::new(file).split(b'\n')) {
        let line = line?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Event>(&line) {
            Ok(event) => read.events.push(event),
            Err(_) => read.skipped.push(number),
        }
    }
    Ok(read)
}

/// Reads the history of `state_dir` into `history`, warning of lines it skipped. A file that
/// cannot be read leaves `history` empty, with a warning: the daemon runs on without the past.
pub fn restore(state_dir: &Path, history: &mut History) {
    let path = state_dir.join(HISTORY_FILE);
    match read(state_dir) {
        Ok(back) => {
            if let Some(first) = back.skipped.first() {
                tracing::warn!(
                    file = %path.display(),
                    line = first,
                    skipped = back.skipped.len(),
                    "history: skipped lines that are not events (a write cut short, or an edit); the rest is kept"
                );
            }
            history.replay(back.events);
        }
        Err(error) => {
            tracing::warn!(file = %path.display(), %error, "history: cannot read it; since when each address is in its state starts afresh");
        }
    }
}

/// The open history file, appended to.
#[derive(Debug)]
pub struct HistoryLog {
    path: PathBuf,
    max_bytes: u64,
    /// The file's size, and its size right after the last rotation (the carried-over events).
    size: u64,
    base: u64,
    /// Whether the last write failed: a failure is logged once, not at every change.
    failing: bool,
}

impl HistoryLog {
    /// Opens (or creates) the history file of `state_dir` for appending. A line cut short by a
    /// crash is ended first, so the next event starts on its own line.
    pub fn open(state_dir: &Path, max_bytes: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(state_dir)?;
        let path = state_dir.join(HISTORY_FILE);
        let mut file = OpenOptions::new().create(true).read(true).append(true).open(&path)?;
        let mut size = file.metadata()?.len();
        if size > 0 {
            use std::io::{Read as _, Seek as _, SeekFrom};
            let mut last = [0u8];
            file.seek(SeekFrom::End(-1))?;
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                file.write_all(b"\n")?;
                size += 1;
            }
        }
        Ok(Self {
            path,
            max_bytes,
            size,
            base: 0,
            failing: false,
        })
    }

    /// Appends `events`; rotates the file when it grew past the limit. `history` holds the
    /// events already (they are carried over into a rotated file). A failure is logged, never
    /// fatal: the history in memory, the page and the metrics go on.
    pub fn append(&mut self, events: &[Event], history: &History) {
        if events.is_empty() {
            return;
        }
        let outcome = self.write(events).and_then(|()| {
            if self.size > self.base.saturating_add(self.max_bytes) {
                self.rotate(history)
            } else {
                Ok(())
            }
        });
        match (outcome, self.failing) {
            (Ok(()), true) => {
                self.failing = false;
                tracing::info!(file = %self.path.display(), "history: writing again");
            }
            (Err(error), false) => {
                self.failing = true;
                tracing::warn!(file = %self.path.display(), %error, "history: cannot write; changes are kept in memory only until it works again");
            }
            (Ok(()), false) | (Err(_), true) => {}
        }
    }

    fn write(&mut self, events: &[Event]) -> std::io::Result<()> {
        let mut lines = Vec::with_capacity(events.len() * 160);
        for event in events {
            serde_json::to_writer(&mut lines, event)?;
            lines.push(b'\n');
        }
        let mut file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        file.write_all(&lines)?;
        self.size += lines.len() as u64;
        Ok(())
    }

    fn rotate(&mut self, history: &History) -> std::io::Result<()> {
        std::fs::rename(&self.path, rotated(&self.path))?;
        let mut lines = Vec::new();
        for event in history.current_events() {
            serde_json::to_writer(&mut lines, &event)?;
            lines.push(b'\n');
        }
        state_file::write_atomically(&self.path, &lines)?;
        self.size = lines.len() as u64;
        self.base = self.size;
        Ok(())
    }
}

fn rotated(path: &Path) -> PathBuf {
    let mut rotated = path.as_os_str().to_owned();
    rotated.push(".1");
    PathBuf::from(rotated)
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::core::history::Aspect;

    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("wla-history-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            Self(dir)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn event(second: u64, ip: &str, from: Option<&str>, to: &str) -> Event {
        Event {
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + second),
            target: "vendor".into(),
            ip: ip.parse::<IpAddr>().unwrap(),
            port: 22,
            aspect: Aspect::State,
            from: from.map(str::to_string),
            to: Some(to.to_string()),
            detail: "x".repeat(100),
        }
    }

    #[test]
    fn events_are_read_back_in_order_and_a_cut_line_is_skipped_and_ended() {
        let dir = Dir::new("cut");
        let history = History::new(10);
        let mut log = HistoryLog::open(&dir.0, 1 << 20).unwrap();
        log.append(&[event(1, "192.0.2.1", None, "open")], &history);
        // A crash in the middle of a line, then garbage an editor left.
        let path = dir.0.join(HISTORY_FILE);
        let mut text = std::fs::read(&path).unwrap();
        text.extend_from_slice(b"{\"at\":17000\n not json\n{\"at\":1700000002,\"target\"");
        std::fs::write(&path, text).unwrap();
        let mut log = HistoryLog::open(&dir.0, 1 << 20).unwrap();
        log.append(&[event(3, "192.0.2.1", Some("open"), "timeout")], &history);
        let back = read(&dir.0).unwrap();
        assert_eq!(back.skipped, [2, 3, 4]);
        let tos: Vec<_> = back.events.iter().map(|e| e.to.as_deref().unwrap()).collect();
        assert_eq!(tos, ["open", "timeout"], "the event after the cut line is whole");
    }

    #[test]
    fn rotation_keeps_the_size_bounded_and_every_current_state_in_the_new_file() {
        let dir = Dir::new("rotate");
        let mut history = History::new(10);
        let mut log = HistoryLog::open(&dir.0, 2_000).unwrap();
        let first = event(0, "192.0.2.9", None, "open");
        history.replay([first.clone()]);
        log.append(std::slice::from_ref(&first), &history);
        for second in 1..100 {
            let (from, to) = if second % 2 == 1 {
                ("open", "refused")
            } else {
                ("refused", "open")
            };
            let change = event(second, "192.0.2.1", Some(from), to);
            history.replay([change.clone()]);
            log.append(&[change], &history);
            let size = std::fs::metadata(dir.0.join(HISTORY_FILE)).unwrap().len();
            assert!(size <= 2_000 + 2 * 250, "rotated by size: {size} bytes");
        }
        assert!(dir.0.join("history.jsonl.1").exists(), "the previous file is kept once");
        let mut restarted = History::new(10);
        restarted.replay(read(&dir.0).unwrap().events);
        let mut current: Vec<_> = restarted
            .current_events()
            .into_iter()
            .map(|e| (e.ip.to_string(), e.to.unwrap()))
            .collect();
        current.sort();
        assert_eq!(
            current,
            [
                ("192.0.2.1".to_string(), "refused".to_string()),
                ("192.0.2.9".to_string(), "open".to_string())
            ],
            "an address that never changed since before the rotation is still known"
        );
    }

    #[test]
    fn a_missing_file_is_an_empty_history_and_a_crash_during_rotation_reads_the_rotated_one() {
        let dir = Dir::new("missing");
        assert!(read(&dir.0).unwrap().events.is_empty());
        std::fs::create_dir_all(&dir.0).unwrap();
        let line = serde_json::to_string(&event(1, "192.0.2.1", None, "open")).unwrap();
        std::fs::write(dir.0.join("history.jsonl.1"), line + "\n").unwrap();
        assert_eq!(read(&dir.0).unwrap().events.len(), 1);
    }
}
