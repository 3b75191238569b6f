//! TLS: the `tls_server_config` section (schema and validation), the rustls server
//! configuration built from it, certificate reloading, and the TLS accept path (handshake in
//! its own task, with a timeout). May import: error (never config, serve or auth).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

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
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::error::WebConfigError;

/// Time a client gets to finish the TLS handshake, from the accepted TCP connection. A real
/// handshake takes a few round trips (milliseconds, or a second or two over a bad link);
/// 10 s is what the header-read timeout gives a plain-HTTP client for its request head.
/// Connections still in the handshake also count toward the connection cap, and are the
/// first closed when it is reached (see `serve`).
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often, at most, the certificate files are checked for changes.
const CERT_RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// What a plain-HTTP client gets on the TLS port (same words as Go's net/http).
const PLAIN_HTTP_ON_TLS_RESPONSE: &[u8] = b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

// ---------------------------------------------------------------------------------------------
// The `tls_server_config` section
// ---------------------------------------------------------------------------------------------

/// `tls_server_config` as written in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
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

pub(crate) fn build_tls(raw: RawTls, base_dir: &Path) -> Result<TlsBuild, WebConfigError> {
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
// The TLS accept path
// ---------------------------------------------------------------------------------------------

/// TLS handshake of an accepted connection; `Ok(None)` when the client spoke plain HTTP
/// (answered with a 400) or closed at once. The caller bounds it with
/// [`TLS_HANDSHAKE_TIMEOUT`] (the server loop runs each connection in its own task, so a slow
/// handshake delays no one else).
pub(crate) async fn handshake(acceptor: TlsAcceptor, mut tcp: TcpStream) -> io::Result<Option<TlsStream<TcpStream>>> {
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
    use crate::test_support::self_signed;

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
}
