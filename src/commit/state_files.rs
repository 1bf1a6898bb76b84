//! State files of commit mode: `<dir>/state-<epoch ms>.json`, each holding
//! one bare state value, as the Go tap wrote them.
//!
//! A file is written to a hidden temporary name, synced, renamed into place
//! and the directory synced, so a crash leaves either the whole file or
//! none; leftovers of a crash keep their hidden name and are removed at the
//! next start. Names never repeat within a run: two STATEs of the same
//! millisecond get consecutive numbers, so the newest state is always the
//! file with the largest number.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error(
        "cannot create the state directory {path}: {source}; pass a writable --state-directory"
    )]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write state file {path}: {source}; check space and permissions of --state-directory")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The directory of state files.
#[derive(Debug)]
pub struct StateDirectory {
    dir: PathBuf,
    last_ms: u64,
}

impl StateDirectory {
    /// Opens the directory, creating it if missing, and removes temporary
    /// files a crash left behind.
    pub fn open(dir: &Path) -> Result<StateDirectory, StateFileError> {
        std::fs::create_dir_all(dir).map_err(|source| StateFileError::Create {
            path: dir.to_path_buf(),
            source,
        })?;
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name.starts_with(".state-") && name.ends_with(".tmp") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(StateDirectory {
            dir: dir.to_path_buf(),
            // Later names stay above earlier runs' files even if the clock
            // went back, so the newest state is always the largest name.
            last_ms: newest_ms_in(dir).unwrap_or(0),
        })
    }

    /// Writes one state file and returns its path.
    pub fn write(&mut self, value: &[u8]) -> Result<PathBuf, StateFileError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let ms = now.max(self.last_ms + 1);
        self.last_ms = ms;
        let path = self.dir.join(format!("state-{ms}.json"));
        let tmp = self.dir.join(format!(".state-{ms}.json.tmp"));
        let err = |source| StateFileError::Write {
            path: path.clone(),
            source,
        };
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(value).map_err(err)?;
        f.write_all(b"\n").map_err(err)?;
        f.sync_all().map_err(err)?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(err)?;
        // The rename itself is durable only once the directory is synced.
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(path)
    }

    /// The file with the newest state, from this run or an earlier one.
    pub fn newest(&self) -> Option<PathBuf> {
        newest_in(&self.dir)
    }
}

/// The newest state file in `dir`, if any.
pub fn newest_in(dir: &Path) -> Option<PathBuf> {
    newest_ms_in(dir).map(|ms| dir.join(format!("state-{ms}.json")))
}

fn newest_ms_in(dir: &Path) -> Option<u64> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| state_file_ms(&e.file_name().to_string_lossy()))
        .max()
}

/// The number in a state file's name, `state-<n>.json`.
pub fn state_file_ms(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("state-")?.strip_suffix(".json")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let cases = [
            ("state-1700000000000.json", Some(1_700_000_000_000)),
            ("state-1.json", Some(1)),
            ("state-.json", None),
            ("state-12.json.tmp", None),
            (".state-12.json.tmp", None),
            ("state-1x.json", None),
            ("state-+1.json", None),
            ("other.json", None),
        ];
        for (name, want) in cases {
            assert_eq!(state_file_ms(name), want, "{name}");
        }
    }

    #[test]
    fn files_are_whole_ordered_and_leftovers_go() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("a/b");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join(".state-5.json.tmp"), "{\"half").expect("leftover");
        // a file from a later clock (another run) stays the newest until passed
        std::fs::write(dir.join("state-99999999999999.json"), "{}").expect("old");
        let mut states = StateDirectory::open(&dir).expect("open");
        assert!(!dir.join(".state-5.json.tmp").exists());
        let a = states.write(br#"{"bookmarks":{"a":1}}"#).expect("write");
        let b = states.write(br#"{"bookmarks":{"a":2}}"#).expect("write");
        assert_ne!(a, b);
        assert_eq!(states.newest(), Some(b.clone()));
        assert_eq!(
            std::fs::read_to_string(&b).expect("read"),
            "{\"bookmarks\":{\"a\":2}}\n"
        );
        let names: Vec<String> = std::fs::read_dir(&dir)
            .expect("ls")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(
            names.iter().all(|n| state_file_ms(n).is_some()),
            "{names:?}"
        );
    }

    #[test]
    fn a_missing_directory_is_created() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("x/y/z");
        let states = StateDirectory::open(&dir).expect("open");
        assert!(dir.is_dir());
        assert_eq!(states.newest(), None);
    }
}
