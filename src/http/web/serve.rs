//! The server loop: plain HTTP or TLS, with the web config's request guard.

use std::future::Future;
use std::io;

use axum::Router;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::config::WebConfig;
use super::tls::TlsListener;

// ---------------------------------------------------------------------------------------------
// Serving
// ---------------------------------------------------------------------------------------------

/// Serve `app` on `listener` until `shutdown` completes, then finish the requests in flight.
///
/// With `web` set, its TLS (when configured) applies to every connection and its headers,
/// rate limit and basic authentication to every request (authentication except on
/// [`UNAUTHENTICATED_PATHS`](super::UNAUTHENTICATED_PATHS)). Without it, plain HTTP as before. On the TLS port a client
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

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::http::header::WWW_AUTHENTICATE;

    use super::super::test_support::self_signed;
    use super::super::ClientAuthType;
    use super::*;

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
