//! The panel's login view over HTTP: the page (`panel/login.html`), the stream of a
//! lane's frames (`GET /api/lanes/{lane}/view`, SSE) and the person's input
//! (`POST /api/lanes/{lane}/view/input`). Both API routes are admin routes
//! (`api::routes`): the admin login, loopback only without an `admin_key`, and POSTs from
//! the panel's own origin only. The stream's first event carries the view's token, and
//! every input message must carry it back: a page of another site cannot read the
//! stream, so it cannot forge input even with the session cookie (CSRF).
//!
//! The view lives as long as its stream: a person who closes the page, or whose
//! connection drops, gives the lane back (the runtime's `LoginView` drops).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::Json;
use base64::Engine as _;
use prq_protocol::screen::{ScreenCmd, ScreenEvent, ScreenInput};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::openai::ApiError;
use crate::runtime::{LoginView, Runtime, ViewError};

const PAGE: &str = include_str!("panel/login.html");
const SCRIPT: &str = include_str!("panel/login.js");

/// Events waiting for the viewer's connection; the view's own backlog is small, so
/// this only smooths a burst.
const STREAM_BACKLOG: usize = 8;

/// The view's page and script (public, as the panel's page is: what they show comes
/// through the admin routes).
pub fn page_routes<S: Clone + Send + Sync + 'static>() -> [(&'static str, MethodRouter<S>); 2] {
    [
        (
            "/panel/login",
            get(|| async { asset("text/html; charset=utf-8", PAGE) }),
        ),
        (
            "/panel/login.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        ),
    ]
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The URL of a lane's login view, for a person on another machine (`prq login
/// PREFIX --panel`).
pub fn view_url(panel_url: &str, lane_id: &str) -> String {
    let panel = panel_url.trim_end_matches('/');
    format!("{panel}/panel/login?lane={}", lane_id.replace('#', "%23"))
}

impl From<ViewError> for ApiError {
    fn from(e: ViewError) -> Self {
        let (status, code) = match &e {
            ViewError::Disabled => (StatusCode::FORBIDDEN, "remote_login_disabled"),
            ViewError::NoLane(_) => (StatusCode::NOT_FOUND, "no_such_lane"),
            ViewError::NoPage(_) => (StatusCode::BAD_REQUEST, "no_page"),
            ViewError::Busy { .. } => (StatusCode::CONFLICT, "lane_busy"),
            ViewError::NotNow { .. } => (StatusCode::CONFLICT, "lane_not_idle"),
            ViewError::Held { .. } => (StatusCode::CONFLICT, "view_held"),
            ViewError::Stale => (StatusCode::CONFLICT, "view_closed"),
            ViewError::NoRandomness => (StatusCode::SERVICE_UNAVAILABLE, "no_randomness"),
        };
        let kind = match status {
            StatusCode::FORBIDDEN => "permission_error",
            StatusCode::SERVICE_UNAVAILABLE => "server_error",
            _ => "invalid_request_error",
        };
        ApiError::new(status, kind, e.to_string()).code(code)
    }
}

#[derive(Deserialize)]
pub struct Size {
    /// The viewer's room for the page, in pixels.
    #[serde(default = "default_width")]
    w: u32,
    #[serde(default = "default_height")]
    h: u32,
}

fn default_width() -> u32 {
    1280
}
fn default_height() -> u32 {
    800
}

/// `GET /api/lanes/{lane}/view`: opens the lane's login view and streams it. Events:
/// `open` (`token`, `lane`), `frame` (`jpeg` in base64, `page_width`, `page_height`,
/// `url`), `refused` (`message`), and last `closed` or `ended` (`message`: what became
/// of the lane).
pub async fn view(
    State(rt): State<Arc<Runtime>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(lane): Path<String>,
    Query(size): Query<Size>,
) -> Result<Response, ApiError> {
    let client = peer.ip().to_canonical().to_string();
    let view = rt.open_view(&lane, &client, size.w, size.h)?;
    let (tx, rx) = mpsc::channel(STREAM_BACKLOG);
    tokio::spawn(relay(rt, view, tx));
    let sse = Sse::new(ReceiverStream::new(rx).map(Ok::<_, std::convert::Infallible>))
        .keep_alive(KeepAlive::default());
    Ok(sse.into_response())
}

use futures::StreamExt as _;

/// Passes the view's events to its connection until either ends; then the view drops
/// (the lane is given back).
async fn relay(rt: Arc<Runtime>, mut view: LoginView, tx: mpsc::Sender<Event>) {
    let open = json_event("open", &json!({ "token": view.token, "lane": view.lane }));
    if tx.send(open).await.is_err() {
        return;
    }
    let last = loop {
        tokio::select! {
            // The person left: the page closed or the connection dropped.
            () = tx.closed() => return,
            event = view.events.recv() => match event {
                Some(ScreenEvent::Frame { jpeg, page_width, page_height, url }) => {
                    let jpeg = base64::engine::general_purpose::STANDARD.encode(jpeg);
                    let data = json!({ "jpeg": jpeg, "page_width": page_width, "page_height": page_height, "url": url });
                    if tx.send(json_event("frame", &data)).await.is_err() {
                        return;
                    }
                }
                Some(ScreenEvent::Refused { message }) => {
                    if tx.send(json_event("refused", &json!({ "message": message }))).await.is_err() {
                        return;
                    }
                }
                None if view.is_open() => {
                    let message = rt.view_lost(&view.lane).await;
                    break json_event("ended", &json!({ "message": message }));
                }
                None => break json_event("closed", &json!({ "message": "the view is closed; the lane checks its page and takes requests again" })),
            }
        }
    };
    let _ = tx.send(last).await;
}

fn json_event(name: &str, data: &serde_json::Value) -> Event {
    Event::default().event(name).data(data.to_string())
}

/// One message from the view's page: its token and what to do.
#[derive(Deserialize)]
pub struct Input {
    token: String,
    #[serde(flatten)]
    action: Action,
}

#[derive(Deserialize)]
#[serde(tag = "do", rename_all = "lowercase")]
enum Action {
    Input { event: ScreenInput },
    Go { url: String },
    Back,
    Reload,
    Close,
}

/// `POST /api/lanes/{lane}/view/input`: the person's input, navigation or close.
pub async fn input(
    State(rt): State<Arc<Runtime>>,
    Path(lane): Path<String>,
    Json(input): Json<Input>,
) -> Result<StatusCode, ApiError> {
    let cmd = match input.action {
        Action::Input { event } => ScreenCmd::Input(event),
        Action::Go { url } => ScreenCmd::Go { url },
        Action::Back => ScreenCmd::Back,
        Action::Reload => ScreenCmd::Reload,
        Action::Close => ScreenCmd::Close,
    };
    rt.view_input(&lane, &input.token, cmd)?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_url_names_the_lane() {
        assert_eq!(
            view_url("http://127.0.0.1:8765/", "sandbox#1"),
            "http://127.0.0.1:8765/panel/login?lane=sandbox%231"
        );
    }

    #[test]
    fn input_messages_read_as_the_page_sends_them() {
        let typed: Input =
            serde_json::from_str(r#"{"token":"t","do":"input","event":{"text":{"text":"hi"}}}"#)
                .unwrap();
        assert!(matches!(
            typed.action,
            Action::Input {
                event: ScreenInput::Text { .. }
            }
        ));
        let go: Input =
            serde_json::from_str(r#"{"token":"t","do":"go","url":"http://x/"}"#).unwrap();
        assert!(matches!(go.action, Action::Go { .. }));
        let close: Input = serde_json::from_str(r#"{"token":"t","do":"close"}"#).unwrap();
        assert!(matches!(close.action, Action::Close));
    }
}
