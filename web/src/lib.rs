//! The HTTP server: `--web.config.file` (TLS, basic auth, rate limit, headers) and its loop.
//! May import outside crates only, never chat_exporter; inside: serve → config → {tls, auth} → {error, throttle}.
//!
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
//! The code is split by concern, each file owning the schema of the sections it serves, and
//! the imports run one way, from the top down:
//! - [`serve`](mod@serve) runs the server loop;
//! - [`config`] reads the file, assembles it from its sections and builds the layers;
//! - [`tls`] (`tls_server_config`) builds the rustls configuration and runs the TLS accept
//!   path; [`auth`] (`basic_auth_users`, `rate_limit`, `http_server_config`) checks basic-auth
//!   credentials, with the rate limit and extra headers;
//! - [`error`] has the error every section reports in, [`throttle`] the rate-limited warnings.
//!
//! Entry points for the server code:
//! - [`WebConfig::load`] (or [`load_optional`]) at startup, failing fast on a bad file;
//! - [`serve()`] to run an axum [`Router`](axum::Router) over plain HTTP or TLS with authentication;

pub mod auth;
pub mod config;
pub mod error;
pub mod serve;
pub mod throttle;
pub mod tls;

pub use auth::{
    unauthorized_requests_total, AuthOutcome, BasicAuth, Overloaded, UnauthorizedReason, UNAUTHENTICATED_PATHS,
    UNAUTHORIZED_METRIC_NAME,
};
pub use config::{load_optional, WebConfig};
pub use error::WebConfigError;
pub use serve::{serve, serve_with_limits, Limits};
pub use tls::ClientAuthType;

#[cfg(test)]
pub(crate) mod test_support {
    /// A self-signed certificate for 127.0.0.1 / localhost: (cert PEM, key PEM).
    pub(crate) fn self_signed(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}
