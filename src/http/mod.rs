//! The exporter's HTTP edge.
//!
//! - [`routes`]: the router, its tower layers and the handlers (the metrics, the health
//!   endpoints and a landing page);
//! - [`web`]: `--web.config.file` (TLS, basic authentication, rate limit, extra headers) and
//!   the server loop with its bounds ([`web::serve()`]).

pub mod routes;
pub mod web;

pub use routes::{router, AppState};
