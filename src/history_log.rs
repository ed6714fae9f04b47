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
use std::sync::Arc;

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
    read_lines(file)
}

/// Every event the state directory still holds, for a report that reaches further back than
/// the current file: the rotated file's, then the current one's (whose carried-over lines
/// repeat the rotated file's; replaying skips them).
pub fn read_all(state_dir: &Path) -> std::io::Result<ReadBack> {
    let path = state_dir.join(HISTORY_FILE);
    let mut back = match File::open(rotated(&path)) {
        Ok(file) if path.exists() => read_lines(file)?,
        Ok(_) => ReadBack::default(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => ReadBack::default(),
        Err(err) => return Err(err),
    };
    let current = read(state_dir)?;
    back.events.extend(current.events);
    back.skipped.extend(current.skipped);
    Ok(back)
}

fn read_lines(file: File) -> std::io::Result<ReadBack> {
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
    /// The size of the carried-over events at the top of the file: rotation waits until the
    /// file grew `max_bytes` beyond them.
    base: u64,
    /// Whether the last write failed: a failure is logged once, not at every change, and the
    /// next write starts on a new line (the failed one may have left half a line).
    failing: bool,
}

impl HistoryLog {
    /// Opens the history file of `state_dir` for appending; `history` holds what was read back.
    /// A missing or empty file (a crash during rotation, an operator's `rm`) starts with the
    /// current events, so the next restart still knows every `since`; a line cut short by a
    /// crash is ended, so the next event starts on its own line.
    pub fn open(state_dir: &Path, max_bytes: u64, history: &History) -> std::io::Result<Self> {
        std::fs::create_dir_all(state_dir)?;
        let path = state_dir.join(HISTORY_FILE);
        let carried = lines(&history.current_events())?;
        let size = std::fs::metadata(&path).map_or(0, |m| m.len());
        if size == 0 {
            state_file::write_atomically(&path, &carried)?;
        } else {
            use std::io::{Read as _, Seek as _, SeekFrom};
            let mut file = OpenOptions::new().read(true).append(true).open(&path)?;
            let mut last = [0u8];
            file.seek(SeekFrom::End(-1))?;
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                file.write_all(b"\n")?;
            }
        }
        Ok(Self {
            path,
            max_bytes,
            base: carried.len() as u64,
            failing: false,
        })
    }

    /// Appends `events`; rotates the file when it grew past the limit. `history` holds the
    /// events already (they are carried over into a rotated file). A failure is logged, never
    /// fatal: the history in memory, the page and the metrics go on.
    pub fn append(&mut self, events: &[Arc<Event>], history: &History) {
        if events.is_empty() {
            return;
        }
        let outcome = self.write(events, history);
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

    fn write(&mut self, events: &[Arc<Event>], history: &History) -> std::io::Result<()> {
        let size = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        if size == 0 {
            // Gone or emptied under us: start again from what is known, which includes `events`.
            return self.start_afresh(history, false);
        }
        let mut text = if self.failing { vec![b'\n'] } else { Vec::new() };
        text.extend(lines(events)?);
        let mut file = OpenOptions::new().append(true).open(&self.path)?;
        file.write_all(&text)?;
        if size + text.len() as u64 > self.base.saturating_add(self.max_bytes) {
            self.start_afresh(history, true)?;
        }
        Ok(())
    }

    /// Replaces the file with the event that set each current value: written whole to a
    /// temporary file first, so a crash at any step leaves a complete file or its rotated copy.
    fn start_afresh(&mut self, history: &History, keep_old: bool) -> std::io::Result<()> {
        let carried = lines(&history.current_events())?;
        let mut temporary = self.path.as_os_str().to_owned();
        temporary.push(".new");
        let temporary = PathBuf::from(temporary);
        {
            let mut file = File::create(&temporary)?;
            file.write_all(&carried)?;
            file.sync_all()?;
        }
        if keep_old {
            std::fs::rename(&self.path, rotated(&self.path))?;
        }
        std::fs::rename(&temporary, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.base = carried.len() as u64;
        Ok(())
    }
}

fn lines(events: &[Arc<Event>]) -> std::io::Result<Vec<u8>> {
    let mut text = Vec::with_capacity(events.len() * 200);
    for event in events {
        serde_json::to_writer(&mut text, event.as_ref())?;
        text.push(b'\n');
    }
    Ok(text)
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
            first_sweep: false,
            sources_failing: false,
        }
    }

    #[test]
    fn events_are_read_back_in_order_and_a_cut_line_is_skipped_and_ended() {
        let dir = Dir::new("cut");
        let mut history = History::new(10);
        let mut log = HistoryLog::open(&dir.0, 1 << 20, &history).unwrap();
        let first = event(1, "192.0.2.1", None, "open");
        history.replay([first.clone()]);
        log.append(&[first.into()], &history);
        // A crash in the middle of a line, then garbage an editor left.
        let path = dir.0.join(HISTORY_FILE);
        let mut text = std::fs::read(&path).unwrap();
        text.extend_from_slice(b"{\"at\":17000\n not json\n{\"at\":1700000002,\"target\"");
        std::fs::write(&path, text).unwrap();
        let mut log = HistoryLog::open(&dir.0, 1 << 20, &history).unwrap();
        let second = event(3, "192.0.2.1", Some("open"), "timeout");
        history.replay([second.clone()]);
        log.append(&[second.into()], &history);
        let back = read(&dir.0).unwrap();
        assert_eq!(back.skipped, [2, 3, 4]);
        let tos: Vec<_> = back.events.iter().map(|e| e.to.as_deref().unwrap()).collect();
        assert_eq!(tos, ["open", "timeout"], "the event after the cut line is whole");
    }

    #[test]
    fn rotation_keeps_the_size_bounded_and_every_current_state_in_the_new_file() {
        let dir = Dir::new("rotate");
        let mut history = History::new(10);
        let mut log = HistoryLog::open(&dir.0, 2_000, &history).unwrap();
        let first = event(0, "192.0.2.9", None, "open");
        history.replay([first.clone()]);
        log.append(&[first.into()], &history);
        for second in 1..100 {
            let (from, to) = if second % 2 == 1 {
                ("open", "refused")
            } else {
                ("refused", "open")
            };
            let change = event(second, "192.0.2.1", Some(from), to);
            history.replay([change.clone()]);
            log.append(&[change.into()], &history);
            let size = std::fs::metadata(dir.0.join(HISTORY_FILE)).unwrap().len();
            assert!(size <= 2_000 + 2 * 250, "rotated by size: {size} bytes");
        }
        assert!(dir.0.join("history.jsonl.1").exists(), "the previous file is kept once");
        let mut restarted = History::new(10);
        restarted.replay(read(&dir.0).unwrap().events);
        let mut current: Vec<_> = restarted
            .current_events()
            .into_iter()
            .map(|e| (e.ip.to_string(), e.to.clone().unwrap()))
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
    fn after_a_crash_between_the_renames_of_a_rotation_every_since_survives_two_restarts() {
        let dir = Dir::new("crash");
        let mut history = History::new(10);
        let events = [
            event(1, "192.0.2.1", None, "open"),
            event(2, "192.0.2.2", None, "timeout"),
        ];
        history.replay(events.clone());
        let mut log = HistoryLog::open(&dir.0, 1 << 20, &history).unwrap();
        log.append(&events.clone().map(Arc::new), &history);
        // The crash: the file was renamed to .1, its replacement not yet in place.
        std::fs::rename(dir.0.join(HISTORY_FILE), dir.0.join("history.jsonl.1")).unwrap();
        for _restart in 0..2 {
            let mut restarted = History::new(10);
            restore(&dir.0, &mut restarted);
            assert_eq!(restarted.current_events().len(), 2);
            HistoryLog::open(&dir.0, 1 << 20, &restarted).unwrap();
            std::fs::remove_file(dir.0.join("history.jsonl.1")).ok();
        }
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
