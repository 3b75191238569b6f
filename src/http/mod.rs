//! The exporter's HTTP edge: what a scraper and a probe reach. May import `exposition`
//! and `health`; its server (`web`) names nothing of the exporter.
//!
//! - [`routes`]: the router, its tower layers and the handlers (the metrics, the health
//!   endpoints and a landing page);
//! - [`web`]: `--web.config.file` (TLS, basic authentication, rate limit, extra headers) and
//!   the server loop with its bounds ([`web::serve()`]).

pub mod routes;
/// The web crate (web/), at its former path `crate::http::web`.
pub use chat_exporter_web as web;

pub use routes::{router, AppState};
