//! The server loop and its bounds: the top of the module, it may import every other file
//! here (config, tls, auth, error, throttle); nothing here imports it.
//!
//! Each accepted connection runs in its own task: the TLS handshake (when TLS is on), then
//! hyper's HTTP/1.1 connection driver (`hyper::server::conn::http1`), with the axum router
//! as its service. The bounds, all in [`Limits`] (defaults in the constants below):
//!
//! - **connections**: at most [`MAX_CONNECTIONS`] open at once. When a new connection
//!   arrives at the cap, the connection that has gone longest without a request in progress
//!   (still in its TLS handshake, still sending its first request head, or idle between
//!   requests) is closed to make room. So connections that hold a slot without asking for
//!   anything (slowloris, TLS clients that never send a ClientHello, forgotten keep-alives)
//!   cannot lock out a fresh scraper: its request head arrives at once and, from then on, its
//!   connection is busy and chosen last. When every connection has a request in progress,
//!   the one busy longest is asked to close, and gets [`CLOSE_GRACE`] to finish writing its
//!   response: clients keeping every connection busy, or never reading their answers,
//!   cannot keep a new one out either.
//! - **response**: [`RESPONSE_TIMEOUT`] from a complete request head to its response
//!   written (a client that does not read cannot hold its slot for ever); the last part of
//!   an answer handed to hyper is then bounded by the keep-alive deadline.
//! - **TLS handshake**: [`TLS_HANDSHAKE_TIMEOUT`] from the accepted TCP connection.
//! - **first request head**: [`HEADER_READ_TIMEOUT`] from the connection (or the end of its
//!   handshake) to a complete request head.
//! - **keep-alive**: [`KEEP_ALIVE_TIMEOUT`] from the end of a response to the next complete
//!   request head (hyper's `header_read_timeout`, which runs from the end of the previous
//!   response, plus the same deadline here).
//! - **header size**: a request head longer than [`MAX_HEADER_BYTES`] gets `431 Request
//!   Header Fields Too Large` and the connection is closed (hyper's `max_buf_size`), which
//!   also bounds the memory a connection holds while its head trickles in.
//! - **logs**: refusals that an attacker can cause by the thousand (failed or timed-out TLS
//!   handshakes, connections closed at the cap, accept errors) are logged at most once per
//!   [`WARN_INTERVAL`] each, with the number of occurrences not logged.
//!
//! The request side (request timeout, requests in flight, load shedding) is in the layers of
//! the router handed to [`serve`], and the bcrypt bounds are in [`crate::auth`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::config::WebConfig;
use crate::throttle::ThrottledWarn;
pub use crate::throttle::WARN_INTERVAL;
use crate::tls;
pub use crate::tls::TLS_HANDSHAKE_TIMEOUT;

/// Connections open at once. A Prometheus server keeps one connection per target (two or
/// three with HA pairs and a browser or two): 512 is two orders of magnitude above need, and
/// 512 connections each holding a full [`MAX_HEADER_BYTES`] read buffer stay around 32 MiB,
/// well inside the 256 MiB memory limit of the Kubernetes manifest. It also stays below the
/// common 1024 open-file soft limit, so accepting never fails for lack of descriptors.
pub const MAX_CONNECTIONS: usize = 512;

/// Time a new connection gets to send its first complete request head. Prometheus (and any
/// HTTP client) writes the head in one go right after connecting; 10 s leaves room for a
/// bad network while freeing slots held by slowloris clients quickly.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Time an idle keep-alive connection is kept for its next request. Prometheus reuses its
/// connection from one scrape to the next: 75 s covers its default 1 m scrape interval (and
/// the common 15 s and 30 s) with room for jitter, so scrapes do not pay a new TCP and TLS
/// handshake each time (nginx's default keep-alive timeout is also 75 s). Idle connections
/// are the first closed when the connection cap is reached, so a long keep-alive costs
/// nothing under attack.
pub const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(75);

/// Largest request head (request line and headers) accepted. A Prometheus scrape sends
/// about 300 bytes, a browser with cookies a few KiB; 32 KiB is nginx's and Apache's order of
/// magnitude. hyper's buffer doubles as it fills, so a connection holds at most twice this.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Time from a request's complete head to its response written. The request side answers
/// within its own timeout (the router's); what remains is writing, which a client that
/// does not read would stretch for ever, holding its slot. 30 s writes a scrape of tens
/// of MB to any client that reads; Prometheus gives up on a scrape after 10 s by default.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Time a connection with a request in progress gets to finish it once it is asked to
/// close at the cap: a client that does not read its answer loses its slot to a new
/// connection within this, not at [`RESPONSE_TIMEOUT`].
pub const CLOSE_GRACE: Duration = Duration::from_millis(500);

/// Time given, once `shutdown` completes, to requests in progress to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The server's bounds; [`serve`] uses [`Limits::default`] (the constants above).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// [`MAX_CONNECTIONS`]
    pub max_connections: usize,
    /// [`HEADER_READ_TIMEOUT`]
    pub header_read_timeout: Duration,
    /// [`KEEP_ALIVE_TIMEOUT`]
    pub keep_alive_timeout: Duration,
    /// [`TLS_HANDSHAKE_TIMEOUT`]
    pub tls_handshake_timeout: Duration,
    /// [`MAX_HEADER_BYTES`] (hyper raises anything below 8 KiB to 8 KiB)
    pub max_header_bytes: usize,
    /// [`SHUTDOWN_GRACE`]
    pub shutdown_grace: Duration,
    /// [`RESPONSE_TIMEOUT`]
    pub response_timeout: Duration,
    /// [`CLOSE_GRACE`]
    pub close_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: MAX_CONNECTIONS,
            header_read_timeout: HEADER_READ_TIMEOUT,
            keep_alive_timeout: KEEP_ALIVE_TIMEOUT,
            tls_handshake_timeout: TLS_HANDSHAKE_TIMEOUT,
            max_header_bytes: MAX_HEADER_BYTES,
            shutdown_grace: SHUTDOWN_GRACE,
            response_timeout: RESPONSE_TIMEOUT,
            close_grace: CLOSE_GRACE,
        }
    }
}

/// Serve `app` on `listener` until `shutdown` completes, then let the requests in progress
/// finish (for at most [`SHUTDOWN_GRACE`]).
///
/// With `web` set, its TLS (when configured) applies to every connection and its headers,
/// rate limit and basic authentication to every request (authentication except on
/// [`UNAUTHENTICATED_PATHS`](crate::UNAUTHENTICATED_PATHS)). Without it, plain HTTP. On the
/// TLS port a client speaking plain HTTP gets `400 Client sent an HTTP request to an HTTPS
/// server.`. The connection bounds are the module's constants.
pub async fn serve<F>(listener: TcpListener, app: Router, web: Option<WebConfig>, shutdown: F) -> io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    serve_with_limits(listener, app, web, Limits::default(), shutdown).await
}

/// [`serve`] with other bounds (tests use short timeouts).
pub async fn serve_with_limits<F>(
    listener: TcpListener,
    app: Router,
    web: Option<WebConfig>,
    limits: Limits,
    shutdown: F,
) -> io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let app = match &web {
        Some(web) => web.layer(app),
        None => app,
    };
    let tls = web.as_ref().and_then(WebConfig::tls_server_config).map(TlsAcceptor::from);
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .keep_alive(true)
        // Runs from the end of the previous response (or the start of the connection) to the
        // next complete head: the keep-alive bound. The shorter first-head bound is ours.
        .header_read_timeout(limits.keep_alive_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    let (drain_tx, drain) = watch::channel(false);
    let server = Arc::new(Server {
        app,
        tls,
        http,
        limits,
        connections: Connections::new(limits.max_connections),
        drain: drain_tx,
    });

    let shutdown = std::pin::pin!(shutdown);
    let mut shutdown = shutdown;
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(conn) => conn,
            // The peer gave up before we took the connection: nothing to do.
            Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset) => continue,
            Err(e) => {
                // Typically EMFILE: back off instead of spinning.
                ACCEPT_FAILED.hit(&e);
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = server.connections.admit() => permit,
        };
        let slot = server.connections.register(if server.tls.is_some() { Phase::Handshake } else { Phase::FirstHead });
        tokio::spawn(server.clone().connection(tcp, peer, slot, permit, drain.clone()));
    }
    drop(listener);
    let _ = server.drain.send(true);
    if tokio::time::timeout(server.limits.shutdown_grace, server.connections.all_closed()).await.is_err() {
        tracing::warn!(
            open = server.connections.open_count(),
            "shutdown: connections still open after the grace period; closing them"
        );
    }
    Ok(())
}

struct Server {
    app: Router,
    tls: Option<TlsAcceptor>,
    http: http1::Builder,
    limits: Limits,
    connections: Connections,
    /// Set once `shutdown` has completed. Kept here so that it lives as long as any
    /// connection task (a dropped sender would wake the receivers for nothing).
    drain: watch::Sender<bool>,
}

impl Server {
    async fn connection(
        self: Arc<Self>,
        tcp: TcpStream,
        peer: SocketAddr,
        slot: Arc<Slot>,
        _permit: OwnedSemaphorePermit,
        drain: watch::Receiver<bool>,
    ) {
        let _registered = Registered { connections: &self.connections, id: slot.id };
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => self.serve_http(tcp, peer, slot, drain).await,
            Some(acceptor) => {
                let mut draining = drain.clone();
                let handshake =
                    tokio::time::timeout(self.limits.tls_handshake_timeout, tls::handshake(acceptor.clone(), tcp));
                let stream = tokio::select! {
                    result = handshake => result,
                    _ = slot.closed() => return,
                    _ = draining.wait_for(|d| *d) => return,
                };
                match stream {
                    Ok(Ok(Some(stream))) => {
                        slot.set_phase(Phase::FirstHead);
                        self.serve_http(stream, peer, slot, drain).await;
                    }
                    Ok(Ok(None)) => tracing::debug!(%peer, "plain HTTP request on the TLS port refused"),
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        TLS_HANDSHAKE_FAILED.hit(&format_args!("{peer}: {e}"));
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        TLS_HANDSHAKE_TIMED_OUT.hit(&peer);
                    }
                }
            }
        }
    }

    async fn serve_http<I>(&self, io: I, peer: SocketAddr, slot: Arc<Slot>, mut drain: watch::Receiver<bool>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = ConnectionService { app: self.app.clone(), peer, slot: slot.clone() };
        let conn = self.http.serve_connection(TokioIo::new(io), service);
        let mut conn = std::pin::pin!(conn);
        let mut shutting_down = false;
        loop {
            // Closing asked for (cap reached, or the server shutting down): a connection that
            // has not completed a request head yet is dropped; otherwise hyper finishes the
            // response in progress, if any, and closes.
            if !shutting_down && (slot.close_requested() || *drain.borrow_and_update()) {
                match slot.phase() {
                    Phase::Handshake | Phase::FirstHead => return,
                    Phase::Busy | Phase::Idle => {
                        conn.as_mut().graceful_shutdown();
                        shutting_down = true;
                    }
                }
            }
            let deadline = slot.deadline(&self.limits);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                // A phase change, or closing asked for.
                _ = slot.wake.notified() => {}
                _ = tokio::time::sleep_until(deadline.into()) => {
                    if slot.deadline(&self.limits) <= Instant::now() {
                        tracing::debug!(%peer, phase = ?slot.phase(), "connection closed: timed out");
                        return;
                    }
                }
                _ = drain.changed(), if !shutting_down => {}
            }
        }
    }
}

/// The per-connection hyper service: the router, with the peer's address as
/// [`ConnectInfo`], marking the connection busy from a request's complete head until its
/// response body has been handed to hyper.
#[derive(Clone)]
struct ConnectionService {
    app: Router,
    peer: SocketAddr,
    slot: Arc<Slot>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for ConnectionService {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, mut request: hyper::Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(ConnectInfo(self.peer));
        let busy = Busy::new(self.slot.clone());
        let response = self.app.clone().oneshot(request.map(Body::new));
        Box::pin(async move {
            let response = response.await?;
            // Busy until the body is done (dropped by hyper), not merely produced.
            Ok(response.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    let _ = &busy;
                    frame
                }))
            }))
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Open connections
// ---------------------------------------------------------------------------------------------

/// What a connection is doing, for its deadline and for choosing one to close at the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// In the TLS handshake (bounded by its own timeout).
    Handshake,
    /// Waiting for its first complete request head.
    FirstHead,
    /// A request in progress.
    Busy,
    /// Between requests (keep-alive).
    Idle,
}

struct SlotState {
    phase: Phase,
    /// When `phase` started.
    since: Instant,
    /// Asked to close (cap reached, or shutdown) as soon as no request is in progress, and
    /// when.
    close: Option<Instant>,
}

struct Slot {
    id: u64,
    state: Mutex<SlotState>,
    /// Notified on a phase change and when closing is asked for.
    wake: Notify,
}

impl Slot {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_phase(&self, phase: Phase) {
        let mut state = self.lock();
        state.phase = phase;
        state.since = Instant::now();
        drop(state);
        self.wake.notify_one();
    }

    fn phase(&self) -> Phase {
        self.lock().phase
    }

    fn close_requested(&self) -> bool {
        self.lock().close.is_some()
    }

    fn request_close(&self) {
        self.lock().close.get_or_insert_with(Instant::now);
        self.wake.notify_one();
    }

    /// Resolves once closing has been asked for.
    async fn closed(&self) {
        loop {
            if self.close_requested() {
                return;
            }
            self.wake.notified().await;
        }
    }

    /// When the connection is closed unless its phase changes first. A request in
    /// progress has [`RESPONSE_TIMEOUT`] to be answered and written. Once asked to close,
    /// a connection gets [`CLOSE_GRACE`] to finish what it writes: the last frame of an
    /// answer may still be in hyper's buffer after the request counts as done.
    fn deadline(&self, limits: &Limits) -> Instant {
        let state = self.lock();
        let allowed = match state.phase {
            Phase::Handshake => limits.tls_handshake_timeout,
            Phase::FirstHead => limits.header_read_timeout,
            Phase::Idle => limits.keep_alive_timeout,
            Phase::Busy => limits.response_timeout,
        };
        let deadline = state.since + allowed;
        state.close.map_or(deadline, |asked| deadline.min(asked + limits.close_grace))
    }
}

/// Marks a connection busy while alive.
struct Busy(Arc<Slot>);

impl Busy {
    fn new(slot: Arc<Slot>) -> Self {
        slot.set_phase(Phase::Busy);
        Busy(slot)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.set_phase(Phase::Idle);
    }
}

struct Connections {
    permits: Arc<Semaphore>,
    max: usize,
    open: Mutex<HashMap<u64, Arc<Slot>>>,
    next_id: AtomicU64,
}

impl Connections {
    fn new(max: usize) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        Connections {
            permits: Arc::new(Semaphore::new(max)),
            max,
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        }
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Slot>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn open_count(&self) -> usize {
        self.max - self.permits.available_permits()
    }

    /// A place for one more connection: at once below the cap; at the cap, once the
    /// connection chosen by [`Connections::close_one`] has closed.
    async fn admit(&self) -> OwnedSemaphorePermit {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return permit;
        }
        if self.close_one() {
            CAP_REACHED.hit(&format_args!("limit {}", self.max));
        }
        // Every connection asked to close does close: at once without a request in
        // progress, after its response otherwise (bounded by the request timeout).
        self.permits.clone().acquire_owned().await.expect("semaphore never closed")
    }

    /// Ask one connection to close: the one that has gone longest without a request in
    /// progress; if every connection has one, the one busy longest, after its response (so
    /// that clients keeping all connections busy cannot keep a new one out either).
    fn close_one(&self) -> bool {
        let mut open = self.open();
        let victim = open
            .values()
            .filter_map(|slot| {
                let state = slot.lock();
                state.close.is_none().then(|| (state.phase == Phase::Busy, state.since, slot.id))
            })
            .min();
        let Some((_, _, id)) = victim else { return false };
        if let Some(slot) = open.remove(&id) {
            slot.request_close();
        }
        true
    }

    fn register(&self, phase: Phase) -> Arc<Slot> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            id,
            state: Mutex::new(SlotState { phase, since: Instant::now(), close: None }),
            wake: Notify::new(),
        });
        self.open().insert(id, slot.clone());
        slot
    }

    async fn all_closed(&self) {
        let _ = self.permits.acquire_many(self.max as u32).await;
    }
}

/// Removes a connection from the open set when its task ends.
struct Registered<'a> {
    connections: &'a Connections,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.connections.open().remove(&self.id);
    }
}

// ---------------------------------------------------------------------------------------------
// Rate-limited warnings
// ---------------------------------------------------------------------------------------------

static ACCEPT_FAILED: ThrottledWarn = ThrottledWarn::new("accepting a connection failed");
static CAP_REACHED: ThrottledWarn =
    ThrottledWarn::new("connection limit reached: closed the connection waiting longest without a request");
static TLS_HANDSHAKE_FAILED: ThrottledWarn = ThrottledWarn::new("TLS handshake failed");
static TLS_HANDSHAKE_TIMED_OUT: ThrottledWarn = ThrottledWarn::new("TLS handshake timed out");

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::http::header::WWW_AUTHENTICATE;

    use super::*;
    use crate::test_support::self_signed;
    use crate::ClientAuthType;

    #[test]
    fn the_cap_closes_the_connection_waiting_longest_and_a_busy_one_last() {
        let connections = Connections::new(3);
        let busy = connections.register(Phase::FirstHead);
        let _b = Busy::new(busy.clone());
        let oldest_waiting = connections.register(Phase::FirstHead);
        std::thread::sleep(Duration::from_millis(2));
        let newer = connections.register(Phase::Handshake);
        // The busy connection is older than both but chosen last.
        assert!(connections.close_one());
        assert!(oldest_waiting.close_requested());
        assert!(!busy.close_requested());
        assert!(!newer.close_requested());
        assert!(connections.close_one());
        assert!(newer.close_requested());
        assert!(connections.close_one());
        assert!(busy.close_requested(), "closed after its response when no other is left");
        assert!(!connections.close_one(), "each connection is asked once");
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
