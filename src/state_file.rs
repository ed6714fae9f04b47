//! Files in the state directory survive crashes: each is written whole to a temporary file,
//! flushed, renamed over the old one, and the directory flushed, so a reader finds the old
//! content or the new, never half of one.

use std::io::Write as _;
use std::path::Path;

/// Replaces `path` with `bytes`, creating its directory if needed.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&temporary, path)?;
    std::fs::File::open(dir)?.sync_all()
}
