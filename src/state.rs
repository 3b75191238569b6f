//! The state file: the source's cursor, the tracker's open chats and counted transitions,
//! and the counter values, so that a restart (even `kill -9`) neither loses nor
//! double-counts a chat. Saved after each successful poll, before the new values are
//! served, so Prometheus never sees a counter that a restart would take back.
//!
//! What is written follows what changed, not what is open: the file is JSON lines, a
//! snapshot of the whole state on its first line, then one line per poll that changed
//! something, appended and synced. A poll that changed nothing writes nothing. When the
//! lines appended outweigh the snapshot, a new snapshot replaces the file atomically
//! (compaction), so reading it back stays proportional to the state. A line cut short by
//! a crash (no newline) was never acknowledged, so its values were never served: it is
//! ignored, and the next save compacts it away.
//!
//! Resuming ([`resume`]) replays the snapshot and the lines after it into a tracker.
//! May import `tracker`, `model` and the source's cursor error (`source::error`).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::source::error::CursorError;
use crate::tracker::saved::{SavedStateError, TrackerChanges, TrackerState};
use crate::tracker::Tracker;

/// Bumped whenever the file's meaning changes; other versions are set aside, not read.
/// Version 1 was the snapshot alone, which version 2 reads as a snapshot with no change
/// after it (a version 1 exporter would ignore the changes, so it is not given them).
pub const STATE_VERSION: u32 = 2;
const READABLE_VERSIONS: [u32; 2] = [1, STATE_VERSION];

/// Changes are appended until they weigh this much, or as much as the snapshot if more.
const MIN_COMPACTION_BYTES: u64 = 64 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StateFile {
    pub version: u32,
    /// Which source and account the state belongs to (no secret in it).
    pub source: String,
    pub account: String,
    pub saved_at: DateTime<Utc>,
    pub source_state: serde_json::Value,
    pub tracker: TrackerState,
    /// The lines after the snapshot, oldest first: apply them in order.
    #[serde(skip)]
    pub changes: Vec<StateChanges>,
}

/// One line after the snapshot: what one poll changed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StateChanges {
    /// The source's state, when it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_state: Option<serde_json::Value>,
    #[serde(default)]
    pub tracker: TrackerChanges,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read state file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("state file {path} is unreadable ({detail}); set aside as {set_aside}")]
    Corrupt { path: PathBuf, detail: String, set_aside: PathBuf },
    #[error("state file {path} {detail}; set aside as {set_aside}")]
    Incompatible { path: PathBuf, detail: String, set_aside: PathBuf },
    #[error("cannot lock state file {path} (through {lock}): {source}")]
    Lock { path: PathBuf, lock: PathBuf, source: std::io::Error },
    #[error(
        "state file {path} is in use by another exporter ({holder}): give each exporter its own state.path, \
         or stop the other one"
    )]
    InUse { path: PathBuf, holder: String },
}

/// A state file that was read but cannot be resumed from: it is inconsistent.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error(transparent)]
    Tracker(#[from] SavedStateError),
    /// The source refused its saved state.
    #[error(transparent)]
    Source(#[from] CursorError),
}

/// What a state file resumes: the tracker, and the source's state to hand back to it.
#[derive(Debug)]
pub struct Resumed {
    pub tracker: Tracker,
    pub source_state: serde_json::Value,
    pub saved_at: DateTime<Utc>,
}

/// Replays a loaded state file: its snapshot, then each line after it in order (the
/// source's state being the last one given). The tracker resumed has the default
/// series retention.
pub fn resume(saved: StateFile) -> Result<Resumed, ResumeError> {
    let mut tracker = Tracker::from_state(saved.tracker)?;
    let mut source_state = saved.source_state;
    for changes in saved.changes {
        tracker.apply_changes(changes.tracker)?;
        source_state = changes.source_state.unwrap_or(source_state);
    }
    Ok(Resumed { tracker, source_state, saved_at: saved.saved_at })
}

pub struct StateStore {
    path: PathBuf,
    /// The file on disk ends with a whole line this process wrote: changes may be
    /// appended. False until the first snapshot, and after a failed write.
    appendable: bool,
    snapshot_bytes: u64,
    appended_bytes: u64,
    /// The source's state as last written.
    saved_source_state: Option<serde_json::Value>,
    /// The lock held on the file while this store lives (see [`StateStore::lock`]).
    lock: Option<File>,
}

impl StateStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StateStore {
            path: path.into(),
            appendable: false,
            snapshot_bytes: 0,
            appended_bytes: 0,
            saved_source_state: None,
            lock: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the directory if missing and checks it is writable, so a bad path fails
    /// at start rather than at the first save.
    pub fn prepare(&self) -> std::io::Result<()> {
        let dir = self.dir();
        fs::create_dir_all(&dir)?;
        let probe = dir.join(format!(".{}.probe", self.file_name()));
        File::create(&probe)?;
        fs::remove_file(probe)
    }

    /// Takes the state file's lock for as long as this store lives, as Prometheus locks
    /// its TSDB: two exporters pointed at one file (a copied unit, two replicas on one
    /// volume) would each append to the other's snapshot. The lock is an advisory lock on
    /// `.<name>.lock` beside the file, which names the holder's process id; the kernel
    /// lets it go when the process ends, however it ends, so a stale lock never blocks a
    /// restart.
    pub fn lock(&mut self) -> Result<(), StateError> {
        use std::io::Read as _;
        let lock = self.dir().join(format!(".{}.lock", self.file_name()));
        let failed = |source| StateError::Lock { path: self.path.clone(), lock: lock.clone(), source };
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&lock).map_err(failed)?;
        match file.try_lock() {
            Ok(()) => {
                file.set_len(0).map_err(failed)?;
                file.write_all(format!("{}\n", std::process::id()).as_bytes()).map_err(failed)?;
                self.lock = Some(file);
                Ok(())
            }
            Err(fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = (&mut file).take(64).read_to_string(&mut text);
                let holder = match text.trim() {
                    pid if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) => format!("process {pid}"),
                    _ => format!("which holds {}", lock.display()),
                };
                Err(StateError::InUse { path: self.path.clone(), holder })
            }
            Err(fs::TryLockError::Error(e)) => Err(failed(e)),
        }
    }

    fn dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    fn file_name(&self) -> String {
        self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "state".into())
    }

    /// `Ok(None)` when there is no state yet. A corrupt file, or one from another
    /// version, source or account, is renamed aside and reported; never overwritten.
    pub fn load(&self, source: &str, account: &str) -> Result<Option<StateFile>, StateError> {
        let content = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StateError::Read { path: self.path.clone(), source: e }),
        };
        // The snapshot is written whole (atomic replace): all of the first line, or the
        // whole file when it has a single line without a newline.
        let (bytes, rest) = match content.iter().position(|b| *b == b'\n') {
            Some(end) => (&content[..end], &content[end + 1..]),
            None => (&content[..], &[][..]),
        };
        let mut state: StateFile = match serde_json::from_slice(bytes) {
            Ok(s) => s,
            Err(e) => {
                // A file from another version may not parse at all: say which it is, and
                // name the file set aside for it.
                let version = serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|v| v.get("version").and_then(|x| x.as_u64()));
                return Err(match version {
                    Some(v) if v != u64::from(STATE_VERSION) => StateError::Incompatible {
                        path: self.path.clone(),
                        detail: format!("has version {v}, this exporter reads version {STATE_VERSION}"),
                        set_aside: self.set_aside("incompatible")?,
                    },
                    _ => StateError::Corrupt {
                        path: self.path.clone(),
                        detail: e.to_string(),
                        set_aside: self.set_aside("corrupt")?,
                    },
                });
            }
        };
        let mismatch = if !READABLE_VERSIONS.contains(&state.version) {
            Some(format!("has version {}, this exporter reads version {STATE_VERSION}", state.version))
        } else if state.source != source || state.account != account {
            Some(format!("belongs to {} at {}, not {source} at {account}", state.source, state.account))
        } else {
            None
        };
        if let Some(detail) = mismatch {
            let set_aside = self.set_aside("incompatible")?;
            return Err(StateError::Incompatible { path: self.path.clone(), detail, set_aside });
        }
        // Whole lines only: the last one, without its newline, was cut short by a crash.
        for (n, line) in rest.split_inclusive(|b| *b == b'\n').filter(|l| l.ends_with(b"\n")).enumerate() {
            match serde_json::from_slice::<StateChanges>(line) {
                Ok(changes) => state.changes.push(changes),
                Err(e) => {
                    let set_aside = self.set_aside("corrupt")?;
                    let detail = format!("line {}: {e}", n + 2);
                    return Err(StateError::Corrupt { path: self.path.clone(), detail, set_aside });
                }
            }
        }
        Ok(Some(state))
    }

    /// Renames the file aside (`<name>.<why>-<time>`), for a person to inspect.
    pub fn set_aside(&self, why: &str) -> Result<PathBuf, StateError> {
        let stamp = Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
        let target = self.dir().join(format!("{}.{why}-{stamp}", self.file_name()));
        fs::rename(&self.path, &target).map_err(|e| StateError::Read { path: self.path.clone(), source: e })?;
        Ok(target)
    }

    /// Saves what changed since the last save: `changes` and the source's state, as one
    /// line appended and synced; nothing when nothing changed. When the lines appended
    /// outweigh the snapshot, or the file cannot be appended to, writes `snapshot()` in
    /// its place instead. Returns the bytes written.
    pub fn save_changes(
        &mut self,
        changes: TrackerChanges,
        source_state: serde_json::Value,
        snapshot: impl FnOnce() -> StateFile,
    ) -> std::io::Result<u64> {
        let source_changed = self.saved_source_state.as_ref() != Some(&source_state);
        if self.appendable && !source_changed && changes.is_empty() {
            return Ok(0);
        }
        if self.appendable {
            let line = StateChanges { source_state: source_changed.then_some(source_state.clone()), tracker: changes };
            let mut line = serde_json::to_vec(&line)?;
            line.push(b'\n');
            let written = self.appended_bytes + line.len() as u64;
            if written <= self.snapshot_bytes.max(MIN_COMPACTION_BYTES) {
                // A failed or partial append leaves a line to be compacted away.
                self.appendable = false;
                // Opened by name each time: a file replaced or removed meanwhile is not
                // written through an old handle.
                let mut file = OpenOptions::new().append(true).open(&self.path)?;
                file.write_all(&line)?;
                file.sync_data()?;
                self.appendable = true;
                self.appended_bytes = written;
                self.saved_source_state = Some(source_state);
                return Ok(line.len() as u64);
            }
        }
        self.save(&snapshot())
    }

    /// Writes `state` as the snapshot, with no change after it: a temporary file beside
    /// the target, synced, renamed over the target, and the directory synced. After a
    /// crash the file is the old state or the new one. Returns the bytes written.
    pub fn save(&mut self, state: &StateFile) -> std::io::Result<u64> {
        self.appendable = false;
        let dir = self.dir();
        let tmp = dir.join(format!(".{}.tmp-{}", self.file_name(), std::process::id()));
        let mut bytes = serde_json::to_vec(state)?;
        bytes.push(b'\n');
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &self.path)?;
        File::open(&dir)?.sync_all()?;
        self.appendable = true;
        self.snapshot_bytes = bytes.len() as u64;
        self.appended_bytes = 0;
        self.saved_source_state = Some(state.source_state.clone());
        Ok(bytes.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ChatId, ChatLabels};
    use crate::tracker::OpenChat;

    fn snapshot(cursor: i64) -> StateFile {
        StateFile {
            version: STATE_VERSION,
            source: "test".into(),
            account: "account".into(),
            saved_at: Utc::now(),
            source_state: serde_json::json!({ "cursor": cursor }),
            tracker: Tracker::new().to_state(),
            changes: Vec::new(),
        }
    }

    fn opened(id: &str) -> TrackerChanges {
        let at = DateTime::from_timestamp(1_790_000_000, 0).unwrap();
        let chat = OpenChat {
            labels: ChatLabels::default(),
            agent: None,
            attending: false,
            waiting_since: Some(at),
            last_update: at,
        };
        TrackerChanges { open: vec![(ChatId(id.into()), chat)], ..Default::default() }
    }

    #[test]
    fn writes_follow_changes_and_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut store = StateStore::new(&path);
        let first = store.save_changes(opened("1"), serde_json::json!({ "cursor": 1 }), || snapshot(1)).unwrap();
        assert_eq!(first, fs::metadata(&path).unwrap().len(), "the first save is a snapshot");
        let nothing = store.save_changes(TrackerChanges::default(), serde_json::json!({ "cursor": 1 }), || snapshot(1));
        assert_eq!(nothing.unwrap(), 0, "nothing changed, nothing written");
        let cursor =
            store.save_changes(TrackerChanges::default(), serde_json::json!({ "cursor": 2 }), || snapshot(2)).unwrap();
        assert!(cursor > 0, "the cursor moved");
        let line = store.save_changes(opened("2"), serde_json::json!({ "cursor": 2 }), || snapshot(2)).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), first + cursor + line);

        let loaded = StateStore::new(&path).load("test", "account").unwrap().unwrap();
        assert_eq!(loaded.changes.len(), 2);
        assert_eq!(loaded.changes[0].source_state, Some(serde_json::json!({ "cursor": 2 })));
        assert_eq!(loaded.changes[1].tracker, opened("2"));
        assert_eq!(loaded.changes[1].source_state, None);
    }

    #[test]
    fn a_line_cut_short_is_ignored_and_compacted_away() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut store = StateStore::new(&path);
        store.save(&snapshot(1)).unwrap();
        store.save_changes(opened("1"), serde_json::json!({ "cursor": 2 }), || snapshot(2)).unwrap();
        let whole = fs::read(&path).unwrap();
        let mut cut = whole.clone();
        cut.extend_from_slice(b"{\"source_state\":{\"cur");
        fs::write(&path, &cut).unwrap();
        let mut store = StateStore::new(&path);
        let loaded = store.load("test", "account").unwrap().unwrap();
        assert_eq!(loaded.changes.len(), 1, "the whole lines only");
        store.save_changes(TrackerChanges::default(), serde_json::json!({ "cursor": 2 }), || snapshot(2)).unwrap();
        let after = fs::read_to_string(&path).unwrap();
        assert_eq!(after.lines().count(), 1, "the first save after a start is a snapshot: {after}");
    }

    #[test]
    fn a_whole_line_that_cannot_be_read_sets_the_file_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut store = StateStore::new(&path);
        store.save(&snapshot(1)).unwrap();
        let mut content = fs::read(&path).unwrap();
        content.extend_from_slice(b"{\"tracker\": 7}\n");
        fs::write(&path, &content).unwrap();
        let err = store.load("test", "account").unwrap_err();
        let StateError::Corrupt { set_aside, detail, .. } = err else { panic!("{err}") };
        assert!(detail.starts_with("line 2"), "{detail}");
        assert_eq!(fs::read(set_aside).unwrap(), content, "set aside untouched");
        assert!(!path.exists());
    }

    #[test]
    fn appended_lines_are_compacted_once_they_outweigh_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut store = StateStore::new(&path);
        store.save(&snapshot(0)).unwrap();
        let mut snapshots = 0;
        for n in 1..2_000 {
            let cursor = serde_json::json!({ "cursor": n });
            store
                .save_changes(opened(&n.to_string()), cursor, || {
                    snapshots += 1;
                    snapshot(n)
                })
                .unwrap();
            assert!(fs::metadata(&path).unwrap().len() <= 2 * MIN_COMPACTION_BYTES);
        }
        assert!(snapshots >= 2, "{snapshots}");
        let loaded = StateStore::new(&path).load("test", "account").unwrap().unwrap();
        let last = loaded.changes.last().and_then(|c| c.source_state.clone()).unwrap_or(loaded.source_state);
        assert_eq!(last, serde_json::json!({ "cursor": 1999 }));
    }

    #[test]
    fn version_1_files_are_read_as_a_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut v1 = serde_json::to_value(snapshot(5)).unwrap();
        v1["version"] = 1.into();
        fs::write(&path, serde_json::to_string(&v1).unwrap() + "\n").unwrap();
        let loaded = StateStore::new(&path).load("test", "account").unwrap().unwrap();
        assert_eq!(loaded.source_state, serde_json::json!({ "cursor": 5 }));
    }
}
