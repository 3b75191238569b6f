//! The state file: the source's cursor, the tracker's open chats and counted transitions,
//! and the counter values, so that a restart (even `kill -9`) neither loses nor
//! double-counts a chat. Written by atomic replace after each successful poll, before
//! the new values are served, so Prometheus never sees a counter that a restart would
//! take back.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::tracker::TrackerState;

/// Bumped whenever the file's meaning changes; other versions are set aside, not read.
pub const STATE_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StateFile {
    pub version: u32,
    /// Which source and account the state belongs to (no secret in it).
    pub source: String,
    pub account: String,
    pub saved_at: DateTime<Utc>,
    pub source_state: serde_json::Value,
    pub tracker: TrackerState,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read state file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("state file {path} is unreadable ({detail}); set aside as {set_aside}")]
    Corrupt { path: PathBuf, detail: String, set_aside: PathBuf },
    #[error("state file {path} {detail}; set aside as {set_aside}")]
    Incompatible { path: PathBuf, detail: String, set_aside: PathBuf },
}

pub struct StateStore {
    path: PathBuf,
}

impl StateStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StateStore { path: path.into() }
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
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StateError::Read { path: self.path.clone(), source: e }),
        };
        let state: StateFile = match serde_json::from_slice(&bytes) {
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
        let mismatch = if state.version != STATE_VERSION {
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
        Ok(Some(state))
    }

    /// Renames the file aside (`<name>.<why>-<time>`), for a person to inspect.
    pub fn set_aside(&self, why: &str) -> Result<PathBuf, StateError> {
        let stamp = Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
        let target = self.dir().join(format!("{}.{why}-{stamp}", self.file_name()));
        fs::rename(&self.path, &target).map_err(|e| StateError::Read { path: self.path.clone(), source: e })?;
        Ok(target)
    }

    /// Writes a temporary file beside the target, syncs it, renames it over the target
    /// and syncs the directory: after a crash the file is the old state or the new one.
    pub fn save(&self, state: &StateFile) -> std::io::Result<()> {
        let dir = self.dir();
        let tmp = dir.join(format!(".{}.tmp-{}", self.file_name(), std::process::id()));
        {
            let mut f = File::create(&tmp)?;
            serde_json::to_writer(&mut f, state)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &self.path)?;
        File::open(&dir)?.sync_all()
    }
}
