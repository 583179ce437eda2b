//! The Request Queue panel: the page served at `/` and `/panel`, and its stylesheet and
//! script. They are compiled into the binary, so the panel works offline and always
//! matches the daemon that serves it.
//!
//! The page holds no server-side state: its script reads `/api/queue` and `/api/status`,
//! follows `/api/queue/events`, and acts through the queue API like any other client.
//! So these routes work for any router state, and `api::router` serves them.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, MethodRouter};

const INDEX: &str = include_str!("panel/index.html");
const CSS: &str = include_str!("panel/panel.css");
const JS: &str = include_str!("panel/panel.js");

/// The page and its assets, by path (open to all: the data they show comes through the
/// queue API and its access rule). Assets live under `/panel/` so that the page's
/// relative neighbours cannot collide with the API's routes.
pub fn routes<S: Clone + Send + Sync + 'static>() -> [(&'static str, MethodRouter<S>); 4] {
    [
        ("/", get(index)),
        ("/panel", get(index)),
        ("/panel/panel.css", get(css)),
        ("/panel/panel.js", get(js)),
    ]
}

/// `no-cache`: the browser may keep a copy but must revalidate it, so a page left open
/// across a daemon upgrade picks up the new assets on its next load.
fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

async fn index() -> impl IntoResponse {
    asset("text/html; charset=utf-8", INDEX)
}

async fn css() -> impl IntoResponse {
    asset("text/css; charset=utf-8", CSS)
}

async fn js() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", JS)
}
