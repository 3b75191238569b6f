//! [`WebConfigError`]: the error every section of the web config file reports in.
//! May import: std only (nothing else in this module: it is the bottom of the chain).

use std::fmt;
use std::path::PathBuf;

/// An invalid or unreadable web config file. `Display` gives `FILE: KEY: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfigError {
    /// The web config file, when the configuration came from a file.
    pub file: Option<PathBuf>,
    /// The key the error is about (`tls_server_config.cert_file`), empty for the whole file.
    pub key: String,
    pub message: String,
}

impl WebConfigError {
    pub(crate) fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        WebConfigError { file: None, key: key.into(), message: message.into() }
    }
}

impl fmt::Display for WebConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("web config")?;
        if let Some(file) = &self.file {
            write!(f, " {}", file.display())?;
        }
        f.write_str(": ")?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for WebConfigError {}
