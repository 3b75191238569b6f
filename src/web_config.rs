//! `--web.config.file`: TLS and basic authentication for the exporter's HTTP server.
//!
//! The file has the format that Prometheus and its official exporters read through the
//! exporter-toolkit (`web-config.yml`):
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt            # or `cert:` with inline PEM
//!   key_file: server.key             # or `key:` with inline PEM
//!   client_auth_type: NoClientCert   # RequestClientCert, RequireAnyClientCert,
//!                                    # VerifyClientCertIfGiven, RequireAndVerifyClientCert
//!   client_ca_file: ca.crt           # or `client_ca:` with inline PEM
//!   min_version: TLS12               # TLS12 or TLS13 (TLS10/TLS11 are raised to TLS12)
//!   max_version: TLS13
//!   cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]   # TLS 1.2 only, as in Go
//!   curve_preferences: [X25519, CurveP256]
//!   prefer_server_cipher_suites: true
//! http_server_config:
//!   http2: true                      # accepted; this server speaks HTTP/1.1 only
//!   headers:
//!     X-Content-Type-Options: nosniff
//! rate_limit:
//!   interval: 1s
//!   burst: 10
//! basic_auth_users:
//!   prometheus: $2y$10$...           # bcrypt hash
//! ```
//!
//! Relative paths are taken relative to the directory of the web config file. Unknown keys
//! are rejected, and every error names the key it is about
//! (`tls_server_config.cert_file: ...`).
//!
//! TLS is on when `tls_server_config` sets any key; basic authentication is on when
//! `basic_auth_users` has at least one user. The certificate and key files are re-read when
//! they change on disk (checked at most once a second, on new connections), so a rotated
//! certificate is picked up without a restart; a rotation that cannot be loaded is logged
//! and the previous certificate stays in use.
//!
//! The health endpoints [`UNAUTHENTICATED_PATHS`] never ask for credentials and are not
//! rate-limited, so liveness and readiness probes keep working; TLS still applies to them.
//!
//! Entry points for the server code:
//! - [`WebConfig::load`] (or [`load_optional`]) at startup, failing fast on a bad file;
//! - [`serve`] to run an axum [`Router`] over plain HTTP or TLS with authentication;
//! - [`unauthorized_requests_total`] to register the 401 counter in the exporter's registry.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine as _;
use prometheus::IntCounter;
use rustls::crypto::{CryptoProvider, SupportedKxGroup, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CipherSuite, DigitallySignedStruct, DistinguishedName, NamedGroup, RootCertStore, ServerConfig, SignatureScheme,
    SupportedCipherSuite, SupportedProtocolVersion,
};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Name of the counter of requests answered with 401 Unauthorized.
pub const UNAUTHORIZED_METRIC_NAME: &str = "chat_exporter_http_unauthorized_requests_total";

/// Paths served without asking for credentials (probes), even when basic auth is on; the
/// rate limit does not apply to them either.
pub const UNAUTHENTICATED_PATHS: &[&str] = &["/-/healthy", "/-/ready"];

/// Time a client gets to finish the TLS handshake (or to send its first byte).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections in the TLS handshake at once; more are dropped until some finish.
const MAX_PENDING_HANDSHAKES: usize = 256;
/// How often, at most, the certificate files are checked for changes.
const CERT_RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Successful (user, hash, password) verifications remembered to skip bcrypt next time.
const AUTH_CACHE_CAPACITY: usize = 1024;
/// What a plain-HTTP client gets on the TLS port (same words as Go's net/http).
const PLAIN_HTTP_ON_TLS_RESPONSE: &[u8] = b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// Headers that `http_server_config.headers` may set, with their allowed values (none listed:
/// any value), as in the exporter-toolkit.
const ALLOWED_HEADERS: &[(&str, &[&str])] = &[
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

/// The process-wide counter of requests rejected with 401 (missing or wrong credentials).
///
/// Register it once in the exporter's registry:
/// `registry.register(Box::new(web_config::unauthorized_requests_total().clone()))`.
/// Clones share the value.
pub fn unauthorized_requests_total() -> &'static IntCounter {
    static COUNTER: OnceLock<IntCounter> = OnceLock::new();
    COUNTER.get_or_init(|| {
        IntCounter::new(
            UNAUTHORIZED_METRIC_NAME,
            "HTTP requests answered with 401 Unauthorized because basic-auth credentials were missing or wrong.",
        )
        .expect("valid metric name and help")
    })
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

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
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
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

// ---------------------------------------------------------------------------------------------
// File format
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    tls_server_config: Option<RawTls>,
    #[serde(default)]
    http_server_config: Option<RawHttp>,
    #[serde(default)]
    rate_limit: Option<RawRateLimit>,
    #[serde(default)]
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<String>,
    cipher_suites: Option<Vec<String>>,
    curve_preferences: Option<Vec<String>>,
    min_version: Option<String>,
    max_version: Option<String>,
    prefer_server_cipher_suites: Option<bool>,
    client_allowed_sans: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    burst: Option<u32>,
    interval: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Validated configuration
// ---------------------------------------------------------------------------------------------

/// Client certificate policy (`tls_server_config.client_auth_type`), named as in Go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthType {
    NoClientCert,
    RequestClientCert,
    RequireAnyClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

impl ClientAuthType {
    fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "" | "NoClientCert" => ClientAuthType::NoClientCert,
            "RequestClientCert" => ClientAuthType::RequestClientCert,
            // "RequireClientCert" is the exporter-toolkit's backwards-compatible spelling.
            "RequireAnyClientCert" | "RequireClientCert" => ClientAuthType::RequireAnyClientCert,
            "VerifyClientCertIfGiven" => ClientAuthType::VerifyClientCertIfGiven,
            "RequireAndVerifyClientCert" => ClientAuthType::RequireAndVerifyClientCert,
            _ => return None,
        })
    }
}

/// Where a PEM document comes from: a file (re-read when it changes) or inline text.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PemSource {
    File(PathBuf),
    Inline(String),
}

impl PemSource {
    fn read(&self) -> io::Result<Vec<u8>> {
        match self {
            PemSource::File(path) => std::fs::read(path),
            PemSource::Inline(text) => Ok(text.as_bytes().to_vec()),
        }
    }

    /// Modification stamp of a file source; `None` for inline text or an unreadable file.
    fn stamp(&self) -> FileStamp {
        match self {
            PemSource::File(path) => {
                let meta = std::fs::metadata(path).ok()?;
                Some((meta.modified().ok()?, meta.len()))
            }
            PemSource::Inline(_) => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            PemSource::File(path) => path.display().to_string(),
            PemSource::Inline(_) => "inline PEM".to_string(),
        }
    }
}

/// A parsed and validated web config file.
#[derive(Clone)]
pub struct WebConfig {
    file: Option<PathBuf>,
    tls: Option<Arc<ServerConfig>>,
    client_auth: ClientAuthType,
    auth: Option<Arc<BasicAuth>>,
    headers: Vec<(HeaderName, HeaderValue)>,
    rate_limit: Option<(u32, Duration)>,
}

impl fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebConfig")
            .field("file", &self.file)
            .field("tls", &self.tls.is_some())
            .field("client_auth", &self.client_auth)
            .field("basic_auth_users", &self.auth.as_ref().map(|a| a.users.keys().collect::<Vec<_>>()))
            .field("headers", &self.headers)
            .field("rate_limit", &self.rate_limit)
            .finish()
    }
}

/// Load the web config when `--web.config.file` is given (an empty path counts as not given,
/// as in the exporter-toolkit). `Ok(None)` means plain HTTP without authentication.
pub fn load_optional(path: Option<&Path>) -> Result<Option<WebConfig>, WebConfigError> {
    match path {
        Some(p) if !p.as_os_str().is_empty() => WebConfig::load(p).map(Some),
        _ => Ok(None),
    }
}

impl WebConfig {
    /// Read, parse and validate a web config file: certificates and keys are loaded and
    /// checked, bcrypt hashes are checked, so that a bad file fails at startup.
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let with_file = |mut e: WebConfigError| {
            e.file = Some(path.to_path_buf());
            e
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| with_file(WebConfigError::new("", format!("cannot read file: {e}"))))?;
        let base_dir = path.parent().unwrap_or_else(|| Path::new("."));
        let mut config = WebConfig::from_yaml_str(&text, base_dir).map_err(with_file)?;
        config.file = Some(path.to_path_buf());
        Ok(config)
    }

    /// Parse and validate a web config given as YAML text; relative paths are taken relative
    /// to `base_dir`.
    pub fn from_yaml_str(text: &str, base_dir: &Path) -> Result<WebConfig, WebConfigError> {
        // An empty file (or one with only comments) is valid: no TLS, no authentication.
        let value: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| WebConfigError::new("", format!("invalid YAML: {e}")))?;
        let raw: RawConfig = if value.is_null() {
            RawConfig::default()
        } else {
            // serde_yaml's messages start with the path of the offending key
            // (`tls_server_config: unknown field ...`).
            serde_yaml::from_str(text).map_err(|e| WebConfigError::new("", e.to_string()))?
        };

        let (tls, client_auth) = match raw.tls_server_config {
            Some(tls) => build_tls(tls, base_dir)?,
            None => (None, ClientAuthType::NoClientCert),
        };

        let mut headers = Vec::new();
        if let Some(http) = raw.http_server_config {
            // `http2` is accepted for compatibility; this server speaks HTTP/1.1 only.
            let _ = http.http2;
            for (name, value) in http.headers.unwrap_or_default() {
                headers.push(validate_header(&name, &value)?);
            }
        }

        let rate_limit = match raw.rate_limit {
            None => None,
            Some(RawRateLimit { burst, interval }) => {
                let interval = match interval.as_deref().map(str::trim) {
                    None | Some("") | Some("0") | Some("0s") => Duration::ZERO,
                    Some(text) => humantime::parse_duration(text).map_err(|e| {
                        WebConfigError::new("rate_limit.interval", format!("invalid duration {text:?}: {e}"))
                    })?,
                };
                let burst = burst.unwrap_or(0);
                if interval.is_zero() {
                    None
                } else if burst == 0 {
                    return Err(WebConfigError::new(
                        "rate_limit.burst",
                        "must be at least 1 when rate_limit.interval is set (0 would refuse every request)",
                    ));
                } else {
                    Some((burst, interval))
                }
            }
        };

        let users = raw.basic_auth_users.unwrap_or_default();
        for (user, hash) in &users {
            if user.contains(':') {
                return Err(WebConfigError::new(format!("basic_auth_users.{user}"), "a user name cannot contain ':'"));
            }
            validate_bcrypt_hash(hash).map_err(|m| WebConfigError::new(format!("basic_auth_users.{user}"), m))?;
        }
        let auth = if users.is_empty() { None } else { Some(Arc::new(BasicAuth::new(users))) };

        Ok(WebConfig { file: None, tls, client_auth, auth, headers, rate_limit })
    }

    /// `"https"` when TLS is on, `"http"` otherwise (for the `listening on` line and links).
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Whether the server speaks TLS.
    pub fn tls_enabled(&self) -> bool {
        self.tls.is_some()
    }

    /// The rustls server configuration, when TLS is on (ALPN: `http/1.1`).
    pub fn tls_server_config(&self) -> Option<Arc<ServerConfig>> {
        self.tls.clone()
    }

    /// The client certificate policy.
    pub fn client_auth_type(&self) -> ClientAuthType {
        self.client_auth
    }

    /// The basic-auth checker, when `basic_auth_users` has users.
    pub fn basic_auth(&self) -> Option<Arc<BasicAuth>> {
        self.auth.clone()
    }

    /// Wrap `app` with what the file asks for at the HTTP level: extra response headers, the
    /// rate limit and basic authentication (except on [`UNAUTHENTICATED_PATHS`]). [`serve`]
    /// calls this; call it yourself only when serving by other means.
    pub fn layer(&self, app: Router) -> Router {
        if self.headers.is_empty() && self.rate_limit.is_none() && self.auth.is_none() {
            return app;
        }
        let guard = Arc::new(Guard {
            auth: self.auth.clone(),
            bcrypt_slot: Semaphore::new(1),
            headers: self.headers.clone(),
            limiter: self.rate_limit.map(|(burst, interval)| Mutex::new(TokenBucket::new(burst, interval))),
        });
        app.layer(axum::middleware::from_fn_with_state(guard, guard_middleware))
    }
}

fn validate_header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), WebConfigError> {
    let key = format!("http_server_config.headers.{name}");
    let Some((canonical, allowed)) = ALLOWED_HEADERS.iter().find(|(h, _)| h.eq_ignore_ascii_case(name)) else {
        let names: Vec<&str> = ALLOWED_HEADERS.iter().map(|(h, _)| *h).collect();
        return Err(WebConfigError::new(
            key,
            format!("this header can not be configured (allowed: {})", names.join(", ")),
        ));
    };
    if !allowed.is_empty() && !allowed.contains(&value) {
        return Err(WebConfigError::new(key, format!("invalid value {value:?}, expected one of {allowed:?}")));
    }
    let header_value = HeaderValue::from_str(value)
        .map_err(|_| WebConfigError::new(key.clone(), format!("invalid header value {value:?}")))?;
    let header_name = HeaderName::from_bytes(canonical.as_bytes()).expect("static header name");
    Ok((header_name, header_value))
}

fn validate_bcrypt_hash(hash: &str) -> Result<(), String> {
    let hash = hash.trim();
    let parts: Result<bcrypt::HashParts, _> = hash.parse();
    match parts {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("not a bcrypt hash ({e}); generate one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`")),
    }
}

// ---------------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------------

fn resolve_path(base_dir: &Path, value: &str) -> PathBuf {
    let p = Path::new(value);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

/// Pick between `x_file` and inline `x`; both set is an error.
fn pem_source(
    base_dir: &Path,
    file: Option<String>,
    inline: Option<String>,
    file_key: &str,
    inline_key: &str,
) -> Result<Option<PemSource>, WebConfigError> {
    match (non_empty(file), non_empty(inline)) {
        (Some(_), Some(_)) => Err(WebConfigError::new(
            format!("tls_server_config.{file_key}"),
            format!("set either {file_key} or {inline_key}, not both"),
        )),
        (Some(f), None) => Ok(Some(PemSource::File(resolve_path(base_dir, &f)))),
        (None, Some(text)) => Ok(Some(PemSource::Inline(text))),
        (None, None) => Ok(None),
    }
}

fn parse_version(key: &str, value: &str) -> Result<u8, WebConfigError> {
    // Returned as the minor number of "TLS 1.x".
    match value {
        "TLS10" => Ok(0),
        "TLS11" => Ok(1),
        "TLS12" => Ok(2),
        "TLS13" => Ok(3),
        other => Err(WebConfigError::new(
            format!("tls_server_config.{key}"),
            format!("unknown TLS version {other:?} (expected TLS10, TLS11, TLS12 or TLS13)"),
        )),
    }
}

type TlsBuild = (Option<Arc<ServerConfig>>, ClientAuthType);

fn build_tls(raw: RawTls, base_dir: &Path) -> Result<TlsBuild, WebConfigError> {
    let key_name = |k: &str| format!("tls_server_config.{k}");

    let cert = pem_source(base_dir, raw.cert_file, raw.cert, "cert_file", "cert")?;
    let key = pem_source(base_dir, raw.key_file, raw.key, "key_file", "key")?;
    let client_ca = pem_source(base_dir, raw.client_ca_file, raw.client_ca, "client_ca_file", "client_ca")?;
    let client_auth_text = raw.client_auth_type.unwrap_or_default();

    // As in the exporter-toolkit: TLS is on when any of these is set.
    let enabled = cert.is_some() || key.is_some() || client_ca.is_some() || !client_auth_text.is_empty();
    if !enabled {
        return Ok((None, ClientAuthType::NoClientCert));
    }
    let cert = cert
        .ok_or_else(|| WebConfigError::new(key_name("cert_file"), "missing: set cert_file (or cert) to enable TLS"))?;
    let key =
        key.ok_or_else(|| WebConfigError::new(key_name("key_file"), "missing: set key_file (or key) to enable TLS"))?;

    let client_auth = ClientAuthType::parse(&client_auth_text).ok_or_else(|| {
        WebConfigError::new(
            key_name("client_auth_type"),
            format!(
                "unknown value {client_auth_text:?} (expected NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert)"
            ),
        )
    })?;

    if raw.client_allowed_sans.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(WebConfigError::new(
            key_name("client_allowed_sans"),
            "not supported by chat_exporter; use a dedicated client CA with RequireAndVerifyClientCert instead",
        ));
    }

    // Versions. rustls speaks TLS 1.2 and 1.3 only: a lower minimum is raised to TLS 1.2.
    let mut min = parse_version("min_version", raw.min_version.as_deref().unwrap_or("TLS12"))?;
    let max = parse_version("max_version", raw.max_version.as_deref().unwrap_or("TLS13"))?;
    if min < 2 {
        tracing::warn!(
            min_version = raw.min_version.as_deref().unwrap_or_default(),
            "TLS versions before 1.2 are not supported; using TLS12 as the minimum"
        );
        min = 2;
    }
    if max < 2 {
        return Err(WebConfigError::new(
            key_name("max_version"),
            "must be TLS12 or TLS13 (older versions are not supported)",
        ));
    }
    if min > max {
        return Err(WebConfigError::new(key_name("min_version"), "is greater than max_version"));
    }
    let mut versions: Vec<&'static SupportedProtocolVersion> = Vec::new();
    if max >= 3 {
        versions.push(&rustls::version::TLS13);
    }
    if min <= 2 {
        versions.push(&rustls::version::TLS12);
    }

    let mut provider = rustls::crypto::ring::default_provider();

    // Cipher suites: as in Go, the list only restricts TLS 1.2; TLS 1.3 suites are fixed.
    if let Some(names) = raw.cipher_suites.filter(|n| !n.is_empty()) {
        let mut chosen: Vec<SupportedCipherSuite> =
            provider.cipher_suites.iter().copied().filter(|s| s.version() == &rustls::version::TLS13).collect();
        let mut tls12 = 0;
        for name in &names {
            match provider
                .cipher_suites
                .iter()
                .find(|s| s.version() == &rustls::version::TLS12 && cipher_suite_matches(s.suite(), name))
            {
                Some(suite) => {
                    if !chosen.iter().any(|c| c.suite() == suite.suite()) {
                        chosen.push(*suite);
                        tls12 += 1;
                    }
                }
                None => tracing::warn!(cipher_suite = %name, "cipher suite not supported by this server; ignored"),
            }
        }
        if tls12 == 0 && versions.contains(&&rustls::version::TLS12) {
            let supported: Vec<String> = provider
                .cipher_suites
                .iter()
                .filter(|s| s.version() == &rustls::version::TLS12)
                .map(|s| format!("{:?}", s.suite()))
                .collect();
            return Err(WebConfigError::new(
                key_name("cipher_suites"),
                format!("none of the listed TLS 1.2 cipher suites is supported (supported: {})", supported.join(", ")),
            ));
        }
        provider.cipher_suites = chosen;
    }

    // Curves: order of preference; unsupported ones (CurveP521) are skipped with a warning.
    if let Some(names) = raw.curve_preferences.filter(|n| !n.is_empty()) {
        let mut chosen: Vec<&'static dyn SupportedKxGroup> = Vec::new();
        for name in &names {
            let wanted = match name.as_str() {
                "X25519" => Some(NamedGroup::X25519),
                "CurveP256" => Some(NamedGroup::secp256r1),
                "CurveP384" => Some(NamedGroup::secp384r1),
                "CurveP521" => Some(NamedGroup::secp521r1),
                _ => None,
            };
            let Some(wanted) = wanted else {
                return Err(WebConfigError::new(
                    key_name("curve_preferences"),
                    format!("unknown curve {name:?} (expected X25519, CurveP256, CurveP384 or CurveP521)"),
                ));
            };
            match provider.kx_groups.iter().find(|g| g.name() == wanted) {
                Some(group) => {
                    if !chosen.iter().any(|c| c.name() == wanted) {
                        chosen.push(*group);
                    }
                }
                None => tracing::warn!(curve = %name, "curve not supported by this server; ignored"),
            }
        }
        if chosen.is_empty() {
            return Err(WebConfigError::new(
                key_name("curve_preferences"),
                "none of the listed curves is supported (supported: X25519, CurveP256, CurveP384)",
            ));
        }
        provider.kx_groups = chosen;
    }

    let provider = Arc::new(provider);

    // Client certificates.
    let verifier: Arc<dyn ClientCertVerifier> = match client_auth {
        ClientAuthType::NoClientCert => {
            if client_ca.is_some() {
                return Err(WebConfigError::new(
                    key_name("client_ca_file"),
                    "client CAs are configured but client_auth_type is NoClientCert; set client_auth_type (e.g. RequireAndVerifyClientCert)",
                ));
            }
            Arc::new(rustls::server::NoClientAuth)
        }
        ClientAuthType::RequestClientCert | ClientAuthType::RequireAnyClientCert => Arc::new(AcceptAnyClientCert {
            mandatory: client_auth == ClientAuthType::RequireAnyClientCert,
            algorithms: provider.signature_verification_algorithms,
        }),
        ClientAuthType::VerifyClientCertIfGiven | ClientAuthType::RequireAndVerifyClientCert => {
            let ca = client_ca.as_ref().ok_or_else(|| {
                WebConfigError::new(
                    key_name("client_ca_file"),
                    format!("required when client_auth_type is {client_auth_text}"),
                )
            })?;
            let ca_key = if matches!(ca, PemSource::File(_)) { "client_ca_file" } else { "client_ca" };
            let roots = load_roots(ca).map_err(|m| WebConfigError::new(key_name(ca_key), m))?;
            let mut builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            if client_auth == ClientAuthType::VerifyClientCertIfGiven {
                builder = builder.allow_unauthenticated();
            }
            builder
                .build()
                .map_err(|e| WebConfigError::new(key_name(ca_key), format!("cannot build client verifier: {e}")))?
        }
    };

    // Server certificate, checked now, re-read when the files change.
    let resolver = ReloadingCertResolver::new(cert, key, provider.clone())?;

    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| WebConfigError::new(key_name("min_version"), format!("no usable protocol version: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(resolver));
    if raw.prefer_server_cipher_suites.unwrap_or(true) {
        config.ignore_client_order = true;
    }
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Some(Arc::new(config)), client_auth))
}

/// Go and IANA names differ for ChaCha20 suites (Go also accepts the name without `_SHA256`).
fn cipher_suite_matches(suite: CipherSuite, name: &str) -> bool {
    let ours = format!("{suite:?}");
    ours == name || ours.strip_suffix("_SHA256").is_some_and(|short| short == name && short.contains("CHACHA20"))
}

fn load_roots(source: &PemSource) -> Result<RootCertStore, String> {
    let pem = source.read().map_err(|e| format!("cannot read {}: {e}", source.describe()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid PEM in {}: {e}", source.describe()))?;
    if certs.is_empty() {
        return Err(format!("no certificate found in {}", source.describe()));
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| format!("invalid CA certificate in {}: {e}", source.describe()))?;
    }
    Ok(roots)
}

fn load_certified_key(
    cert: &PemSource,
    key: &PemSource,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, WebConfigError> {
    let (cert_key, key_key) = (
        if matches!(cert, PemSource::File(_)) { "tls_server_config.cert_file" } else { "tls_server_config.cert" },
        if matches!(key, PemSource::File(_)) { "tls_server_config.key_file" } else { "tls_server_config.key" },
    );
    let cert_pem =
        cert.read().map_err(|e| WebConfigError::new(cert_key, format!("cannot read {}: {e}", cert.describe())))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| WebConfigError::new(cert_key, format!("invalid PEM in {}: {e}", cert.describe())))?;
    if chain.is_empty() {
        return Err(WebConfigError::new(cert_key, format!("no certificate found in {}", cert.describe())));
    }
    let key_pem =
        key.read().map_err(|e| WebConfigError::new(key_key, format!("cannot read {}: {e}", key.describe())))?;
    let private_key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| WebConfigError::new(key_key, format!("no usable private key in {}: {e}", key.describe())))?;
    CertifiedKey::from_der(chain, private_key, provider)
        .map_err(|e| WebConfigError::new(key_key, format!("does not go with the certificate or is not supported: {e}")))
}

/// Serves the configured certificate and re-reads the files when they change.
#[derive(Debug)]
struct ReloadingCertResolver {
    cert: PemSource,
    key: PemSource,
    provider: Arc<CryptoProvider>,
    state: Mutex<ResolverState>,
}

/// Modification time and length of a file, to notice it changed.
type FileStamp = Option<(SystemTime, u64)>;

#[derive(Debug)]
struct ResolverState {
    current: Arc<CertifiedKey>,
    /// Of the certificate and the key file.
    stamps: (FileStamp, FileStamp),
    last_check: Instant,
}

impl ReloadingCertResolver {
    fn new(cert: PemSource, key: PemSource, provider: Arc<CryptoProvider>) -> Result<Self, WebConfigError> {
        let stamps = (cert.stamp(), key.stamp());
        let current = Arc::new(load_certified_key(&cert, &key, &provider)?);
        Ok(ReloadingCertResolver {
            cert,
            key,
            provider,
            state: Mutex::new(ResolverState { current, stamps, last_check: Instant::now() }),
        })
    }

    fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.last_check.elapsed() >= CERT_RELOAD_CHECK_INTERVAL {
            state.last_check = Instant::now();
            let stamps = (self.cert.stamp(), self.key.stamp());
            if stamps != state.stamps {
                match load_certified_key(&self.cert, &self.key, &self.provider) {
                    Ok(key) => {
                        tracing::info!(cert = %self.cert.describe(), "TLS certificate reloaded");
                        state.current = Arc::new(key);
                        state.stamps = stamps;
                    }
                    // Half-written files during a rotation: keep the old pair, retry later.
                    Err(e) => {
                        tracing::warn!(error = %e, "TLS certificate changed but cannot be loaded; keeping the previous one")
                    }
                }
            }
        }
        state.current.clone()
    }
}

impl ResolvesServerCert for ReloadingCertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// `RequestClientCert` / `RequireAnyClientCert`: a certificate is asked for (or required) but
/// not checked against any CA; only the handshake signature is verified.
#[derive(Debug)]
struct AcceptAnyClientCert {
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AcceptAnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

// ---------------------------------------------------------------------------------------------
// Basic authentication
// ---------------------------------------------------------------------------------------------

/// Result of checking an `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// No users are configured: every request is allowed.
    NotRequired,
    /// The credentials are right.
    Authorized { user: String },
    /// Answer 401 with `WWW-Authenticate: Basic`.
    Unauthorized(UnauthorizedReason),
}

impl AuthOutcome {
    pub fn is_allowed(&self) -> bool {
        !matches!(self, AuthOutcome::Unauthorized(_))
    }
}

/// Why a request was refused (for logs; the client only sees 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnauthorizedReason {
    /// No `Authorization` header.
    MissingCredentials,
    /// Not `Basic <base64 of user:password>`.
    MalformedHeader,
    /// The user is not in `basic_auth_users`.
    UnknownUser,
    /// The password does not match the user's bcrypt hash.
    WrongPassword,
}

/// Checks basic-auth credentials against `basic_auth_users` (bcrypt hashes).
///
/// Successful verifications are remembered by a SHA-256 of (user, hash, password), so a
/// scraper sending the same credentials pays the bcrypt cost once, not on every scrape.
/// Failures are not remembered.
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    verified: Mutex<HashSet<[u8; 32]>>,
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth").field("users", &self.users.keys().collect::<Vec<_>>()).finish_non_exhaustive()
    }
}

struct Credentials {
    user: String,
    password: Vec<u8>,
}

impl BasicAuth {
    /// `users` maps user names to bcrypt hashes (checked by [`WebConfig::load`]).
    pub fn new(users: BTreeMap<String, String>) -> Self {
        let users = users.into_iter().map(|(u, h)| (u, h.trim().to_string())).collect();
        BasicAuth { users, verified: Mutex::new(HashSet::new()) }
    }

    /// Check an `Authorization` header. This may run bcrypt (tens of milliseconds, CPU-bound);
    /// from async code prefer [`WebConfig::layer`], which runs it on the blocking pool one
    /// at a time. It does not count refusals: whoever answers 401 increments
    /// [`unauthorized_requests_total`].
    pub fn check(&self, authorization_header: Option<&HeaderValue>) -> AuthOutcome {
        if self.users.is_empty() {
            return AuthOutcome::NotRequired;
        }
        let creds = match parse_basic(authorization_header) {
            Ok(c) => c,
            Err(reason) => return AuthOutcome::Unauthorized(reason),
        };
        let (hash, known) = match self.users.get(&creds.user) {
            Some(h) => (h.as_str(), true),
            // Same cost as a known user, so timing does not reveal which users exist.
            None => (dummy_hash(), false),
        };
        let key = cache_key(&creds.user, hash, &creds.password);
        if known && self.verified.lock().unwrap_or_else(|p| p.into_inner()).contains(&key) {
            return AuthOutcome::Authorized { user: creds.user };
        }
        let ok = bcrypt::verify(&creds.password, hash).unwrap_or(false);
        if !known {
            return AuthOutcome::Unauthorized(UnauthorizedReason::UnknownUser);
        }
        if !ok {
            return AuthOutcome::Unauthorized(UnauthorizedReason::WrongPassword);
        }
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.len() >= AUTH_CACHE_CAPACITY {
            verified.clear();
        }
        verified.insert(key);
        AuthOutcome::Authorized { user: creds.user }
    }

    /// The outcome without running bcrypt, when it is already known: no users, a missing or
    /// malformed header, or credentials verified before. `None` means bcrypt must run.
    pub fn check_cached(&self, authorization_header: Option<&HeaderValue>) -> Option<AuthOutcome> {
        if self.users.is_empty() {
            return Some(AuthOutcome::NotRequired);
        }
        let creds = match parse_basic(authorization_header) {
            Ok(c) => c,
            Err(reason) => return Some(AuthOutcome::Unauthorized(reason)),
        };
        let hash = self.users.get(&creds.user)?;
        let key = cache_key(&creds.user, hash, &creds.password);
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&key)
            .then_some(AuthOutcome::Authorized { user: creds.user })
    }
}

fn parse_basic(header: Option<&HeaderValue>) -> Result<Credentials, UnauthorizedReason> {
    let header = header.ok_or(UnauthorizedReason::MissingCredentials)?;
    let text = header.to_str().map_err(|_| UnauthorizedReason::MalformedHeader)?.trim();
    let (scheme, rest) = text.split_once(' ').ok_or(UnauthorizedReason::MalformedHeader)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(UnauthorizedReason::MalformedHeader);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .map_err(|_| UnauthorizedReason::MalformedHeader)?;
    let colon = decoded.iter().position(|b| *b == b':').ok_or(UnauthorizedReason::MalformedHeader)?;
    let user = String::from_utf8(decoded[..colon].to_vec()).map_err(|_| UnauthorizedReason::MalformedHeader)?;
    Ok(Credentials { user, password: decoded[colon + 1..].to_vec() })
}

fn cache_key(user: &str, hash: &str, password: &[u8]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [user.as_bytes(), hash.as_bytes(), password] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    let digest = ctx.finish();
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// A bcrypt hash (cost 10, like most configured hashes) compared against for unknown users.
fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| bcrypt::hash("chat_exporter unknown user", 10).expect("bcrypt hash"))
}

// ---------------------------------------------------------------------------------------------
// HTTP middleware
// ---------------------------------------------------------------------------------------------

struct Guard {
    auth: Option<Arc<BasicAuth>>,
    /// One bcrypt verification at a time, waiting asynchronously (as the exporter-toolkit does).
    bcrypt_slot: Semaphore,
    headers: Vec<(HeaderName, HeaderValue)>,
    limiter: Option<Mutex<TokenBucket>>,
}

/// `rate_limit`: `burst` requests at once, refilled one per `interval` (Go's rate.Limiter).
struct TokenBucket {
    capacity: f64,
    tokens: f64,
    per_token: Duration,
    last: Instant,
}

impl TokenBucket {
    fn new(burst: u32, interval: Duration) -> Self {
        TokenBucket { capacity: f64::from(burst), tokens: f64::from(burst), per_token: interval, last: Instant::now() }
    }

    fn allow(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() / self.per_token.as_secs_f64();
        self.tokens = (self.tokens + refill).min(self.capacity);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

async fn guard_middleware(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let mut response = guarded(&guard, request, next).await;
    for (name, value) in &guard.headers {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    response
}

async fn guarded(guard: &Arc<Guard>, request: Request, next: Next) -> Response {
    // Probes pass neither the rate limit nor authentication: a busy or misconfigured
    // scraper must not get the exporter restarted by its liveness probe.
    if UNAUTHENTICATED_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    if let Some(limiter) = &guard.limiter {
        if !limiter.lock().unwrap_or_else(|p| p.into_inner()).allow() {
            return (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests\n").into_response();
        }
    }
    let Some(auth) = &guard.auth else {
        return next.run(request).await;
    };
    let header = request.headers().get(AUTHORIZATION).cloned();
    let outcome = match auth.check_cached(header.as_ref()) {
        Some(outcome) => outcome,
        None => {
            let _slot = guard.bcrypt_slot.acquire().await.expect("semaphore never closed");
            let auth = auth.clone();
            tokio::task::spawn_blocking(move || auth.check(header.as_ref()))
                .await
                .unwrap_or(AuthOutcome::Unauthorized(UnauthorizedReason::WrongPassword))
        }
    };
    match outcome {
        AuthOutcome::NotRequired | AuthOutcome::Authorized { .. } => next.run(request).await,
        AuthOutcome::Unauthorized(reason) => {
            unauthorized_requests_total().inc();
            tracing::debug!(?reason, path = %request.uri().path(), "request refused: basic authentication failed");
            unauthorized_response()
        }
    }
}

fn unauthorized_response() -> Response {
    let mut response = (StatusCode::UNAUTHORIZED, "Unauthorized\n").into_response();
    response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
    response
}

// ---------------------------------------------------------------------------------------------
// Serving
// ---------------------------------------------------------------------------------------------

/// Serve `app` on `listener` until `shutdown` completes, then finish the requests in flight.
///
/// With `web` set, its TLS (when configured) applies to every connection and its headers,
/// rate limit and basic authentication to every request (authentication except on
/// [`UNAUTHENTICATED_PATHS`]). Without it, plain HTTP as before. On the TLS port a client
/// speaking plain HTTP gets `400 Client sent an HTTP request to an HTTPS server.`.
pub async fn serve<F>(listener: TcpListener, app: Router, web: Option<WebConfig>, shutdown: F) -> io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let Some(web) = web else {
        return axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
    };
    let app = web.layer(app);
    match web.tls_server_config() {
        None => axum::serve(listener, app).with_graceful_shutdown(shutdown).await,
        Some(tls) => {
            let listener = TlsListener::new(listener, TlsAcceptor::from(tls))?;
            axum::serve(listener, app).with_graceful_shutdown(shutdown).await
        }
    }
}

/// An [`axum::serve::Listener`] yielding connections whose TLS handshake has completed.
/// Handshakes run in their own tasks (with a timeout), so a slow client delays no one else.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
    accept_task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(listener: TcpListener, acceptor: TlsAcceptor) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let accept_task = tokio::spawn(accept_loop(listener, acceptor, tx));
        Ok(TlsListener { ready, local_addr, accept_task })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task ended (it only does when aborted): no more connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Typically EMFILE: back off instead of spinning.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "too many TLS handshakes in progress; connection dropped");
            continue;
        };
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(acceptor, tcp)).await {
                Ok(Ok(Some(stream))) => {
                    let _ = ready.send((stream, peer)).await;
                }
                Ok(Ok(None)) => tracing::debug!(%peer, "plain HTTP request on the TLS port refused"),
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

/// TLS handshake; `Ok(None)` when the client spoke plain HTTP (answered with a 400).
async fn handshake(acceptor: TlsAcceptor, mut tcp: TcpStream) -> io::Result<Option<TlsStream<TcpStream>>> {
    let _ = tcp.set_nodelay(true);
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await? == 0 {
        return Ok(None);
    }
    // 0x16 starts a TLS handshake record; an ASCII letter starts an HTTP method.
    if first[0] != 0x16 {
        if first[0].is_ascii_uppercase() {
            let mut request = [0u8; 4096];
            let _ = tcp.read(&mut request).await;
            tcp.write_all(PLAIN_HTTP_ON_TLS_RESPONSE).await?;
            let _ = tcp.shutdown().await;
            // Drain what the client still sends so that closing does not reset the
            // connection before it reads the answer.
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while matches!(tcp.read(&mut request).await, Ok(n) if n > 0) {}
            })
            .await;
        }
        return Ok(None);
    }
    acceptor.accept(tcp).await.map(Some)
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<WebConfig, WebConfigError> {
        WebConfig::from_yaml_str(yaml, Path::new("/nonexistent"))
    }

    fn basic(user: &str, password: &str) -> HeaderValue {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {token}")).unwrap()
    }

    #[test]
    fn empty_file_means_plain_http_without_auth() {
        for text in ["", "# only a comment\n", "{}"] {
            let config = parse(text).unwrap();
            assert!(!config.tls_enabled());
            assert_eq!(config.scheme(), "http");
            assert!(config.basic_auth().is_none());
        }
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_path() {
        let err = parse("tls_server_config:\n  cert_fil: x\n").unwrap_err();
        assert!(err.to_string().contains("tls_server_config"), "{err}");
        assert!(err.to_string().contains("cert_fil"), "{err}");
        let err = parse("basic_auth_user: {}\n").unwrap_err();
        assert!(err.to_string().contains("basic_auth_user"), "{err}");
    }

    #[test]
    fn tls_errors_name_the_key() {
        let err = parse("tls_server_config:\n  key_file: k.pem\n").unwrap_err();
        assert_eq!(err.key, "tls_server_config.cert_file");
        let err = parse("tls_server_config:\n  cert_file: c.pem\n").unwrap_err();
        assert_eq!(err.key, "tls_server_config.key_file");
        let err = parse("tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n").unwrap_err();
        assert_eq!(err.key, "tls_server_config.cert_file");
        assert!(err.message.contains("/nonexistent/c.pem"), "{err}");
        let err = parse("tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n  client_auth_type: Sometimes\n")
            .unwrap_err();
        assert_eq!(err.key, "tls_server_config.client_auth_type");
        let err =
            parse("tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n  min_version: TLS14\n").unwrap_err();
        assert_eq!(err.key, "tls_server_config.min_version");
        let err = parse(
            "tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n  client_auth_type: RequireAndVerifyClientCert\n",
        )
        .unwrap_err();
        assert_eq!(err.key, "tls_server_config.client_ca_file");
        let err =
            parse("tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n  client_ca_file: ca.pem\n").unwrap_err();
        assert_eq!(err.key, "tls_server_config.client_ca_file");
        assert!(err.message.contains("NoClientCert"), "{err}");
    }

    #[test]
    fn bad_hashes_and_headers_are_rejected() {
        let err = parse("basic_auth_users:\n  alice: plaintext\n").unwrap_err();
        assert_eq!(err.key, "basic_auth_users.alice");
        let err = parse("http_server_config:\n  headers:\n    X-Powered-By: me\n").unwrap_err();
        assert_eq!(err.key, "http_server_config.headers.X-Powered-By");
        let err = parse("http_server_config:\n  headers:\n    X-Frame-Options: allow\n").unwrap_err();
        assert_eq!(err.key, "http_server_config.headers.X-Frame-Options");
        assert!(parse("http_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\n").is_ok());
        let err = parse("rate_limit:\n  interval: 1s\n").unwrap_err();
        assert_eq!(err.key, "rate_limit.burst");
    }

    #[test]
    fn basic_auth_checks_and_caches() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let config = parse(&format!("basic_auth_users:\n  prometheus: '{hash}'\n")).unwrap();
        let auth = config.basic_auth().unwrap();
        assert_eq!(auth.check(None), AuthOutcome::Unauthorized(UnauthorizedReason::MissingCredentials));
        assert_eq!(
            auth.check(Some(&HeaderValue::from_static("Bearer x"))),
            AuthOutcome::Unauthorized(UnauthorizedReason::MalformedHeader)
        );
        assert_eq!(
            auth.check(Some(&basic("prometheus", "wrong"))),
            AuthOutcome::Unauthorized(UnauthorizedReason::WrongPassword)
        );
        assert_eq!(
            auth.check(Some(&basic("nobody", "s3cret"))),
            AuthOutcome::Unauthorized(UnauthorizedReason::UnknownUser)
        );
        let good = basic("prometheus", "s3cret");
        assert_eq!(auth.check_cached(Some(&good)), None, "not verified yet");
        assert_eq!(auth.check(Some(&good)), AuthOutcome::Authorized { user: "prometheus".into() });
        assert_eq!(auth.check_cached(Some(&good)), Some(AuthOutcome::Authorized { user: "prometheus".into() }));
        assert_eq!(auth.check_cached(Some(&basic("prometheus", "wrong"))), None);
        // Passwords may contain ':'.
        let hash = bcrypt::hash("a:b", 4).unwrap();
        let auth = BasicAuth::new(BTreeMap::from([("u".to_string(), hash)]));
        assert!(auth.check(Some(&basic("u", "a:b"))).is_allowed());
    }

    /// A self-signed certificate for 127.0.0.1 / localhost: (cert PEM, key PEM).
    fn self_signed(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn rotated_certificates_are_picked_up_and_broken_ones_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_a, key_a) = self_signed("a");
        std::fs::write(dir.path().join("c.pem"), &cert_a).unwrap();
        std::fs::write(dir.path().join("k.pem"), &key_a).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let resolver = ReloadingCertResolver::new(
            PemSource::File(dir.path().join("c.pem")),
            PemSource::File(dir.path().join("k.pem")),
            provider,
        )
        .unwrap();
        let first = resolver.current();
        let force_check = |r: &ReloadingCertResolver| {
            r.state.lock().unwrap().last_check = Instant::now() - CERT_RELOAD_CHECK_INTERVAL * 2;
        };

        // A half-done rotation (new certificate, old key) keeps the old pair.
        let (cert_b, key_b) = self_signed("b");
        std::fs::write(dir.path().join("c.pem"), format!("{cert_b}\n")).unwrap();
        force_check(&resolver);
        assert_eq!(resolver.current().cert, first.cert, "mismatched pair must not be served");

        // The finished rotation is served.
        std::fs::write(dir.path().join("k.pem"), &key_b).unwrap();
        force_check(&resolver);
        let rotated = resolver.current();
        assert_ne!(rotated.cert, first.cert, "rotated certificate must be served");
        assert_eq!(rotated.cert[0].as_ref(), CertificateDer::from_pem_slice(cert_b.as_bytes()).unwrap().as_ref());
    }

    #[tokio::test]
    async fn serve_requires_any_client_certificate_and_keeps_probes_open() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed("server");
        std::fs::write(dir.path().join("server.pem"), &cert).unwrap();
        std::fs::write(dir.path().join("server-key.pem"), &key).unwrap();
        let hash = bcrypt::hash("pw", 4).unwrap();
        let config = WebConfig::from_yaml_str(
            &format!(
                "tls_server_config:\n  cert_file: server.pem\n  key_file: server-key.pem\n  \
                 client_auth_type: RequireAnyClientCert\nbasic_auth_users:\n  u: '{hash}'\n"
            ),
            dir.path(),
        )
        .unwrap();
        assert_eq!(config.scheme(), "https");
        assert_eq!(config.client_auth_type(), ClientAuthType::RequireAnyClientCert);

        let app = Router::new()
            .route("/metrics", axum::routing::get(|| async { "metrics\n" }))
            .route("/-/healthy", axum::routing::get(|| async { "Healthy\n" }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, app, Some(config), async {
            let _ = stopped.await;
        }));

        // Any client certificate will do, even one no CA signed.
        let (client_cert, client_key) = self_signed("client");
        let with_cert = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(cert.as_bytes()).unwrap())
            .identity(reqwest::Identity::from_pem(format!("{client_cert}{client_key}").as_bytes()).unwrap())
            .build()
            .unwrap();
        let url = |path: &str| format!("https://localhost:{}{path}", addr.port());
        let r = with_cert.get(url("/metrics")).basic_auth("u", Some("pw")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let r = with_cert.get(url("/metrics")).send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()[WWW_AUTHENTICATE], "Basic");
        let r = with_cert.get(url("/-/healthy")).send().await.unwrap();
        assert_eq!(r.status(), 200, "probes need no credentials");

        let without_cert = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(cert.as_bytes()).unwrap())
            .build()
            .unwrap();
        assert!(without_cert.get(url("/-/healthy")).send().await.is_err(), "a client certificate is required");

        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), server).await.expect("graceful shutdown").unwrap().unwrap();
    }
}
