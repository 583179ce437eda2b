//! The HTTP API: `/v1/*` (OpenAI-compatible), the queue API (`/api/queue*`,
//! `/api/status`, `/api/login`), `/metrics`, `/healthz` (liveness), `/readyz`
//! (readiness for a load balancer), and the panel's routes (from
//! `panel.rs`), all behind one access guard.
//!
//! Each request is parsed, admitted to the runtime, and answered from its ticket's
//! events — as an SSE stream or as one JSON object. Every error becomes one OpenAI error
//! object with its status here (the `From` conversions and [`end_error`]). A client that goes
//! away drops its ticket, which cancels or stops the request (no polling).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use futures::stream::{self, Stream, StreamExt};
use prq_protocol::view::{QueueView, RequestView};
use prq_protocol::worker::{ChatMessage, DeltaKind, FailureKind, RequestId};
use serde_json::{json, Value};
use tokio_stream::wrappers::{errors::BroadcastStreamRecvError, BroadcastStream};

use crate::attachments::{self, Prepared, Refusal};
use crate::auth;
use crate::openai::{self, ApiError, Request, Shape, StopScan};
use crate::queue::{ActionError, Meta};
use crate::runtime::{End, Failed, QueueEvent, ReqEvent, Runtime, Submission, SubmitError};
use crate::tools::check::ToolCall;
use crate::tools::turn::{Event as TurnEvent, Tooled, Turn};

/// Streaming clients waiting in the queue get a comment this often, so they do not
/// time out.
/// The header that carries each admitted request's queue ID.
pub const REQUEST_ID_HEADER: &str = "x-prq-request-id";

/// The header that says why a reply was passed on as text although tools or a format
/// were asked for (after the retry; `tools/turn.rs`).
pub const TOOL_ERROR_HEADER: &str = "x-prq-tool-error";

/// The `code` of an error response, for counting refusals in [`guard`].
#[derive(Debug, Clone, Copy)]
struct ErrorCode(&'static str);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(code) = self.code {
            response.extensions_mut().insert(ErrorCode(code));
        }
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            // A full queue frees up as requests end: 5 s is a guess at that.
            let secs = self.retry_after_s.unwrap_or(5);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// Who may call a route. Every route has one, given where it is listed ([`routes`]);
/// each level is a layer on its group of routes, so a route cannot be open by accident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    /// Anyone the allow-list lets in: liveness, readiness, the panel's page and assets.
    Public,
    /// The OpenAI API: an API key from `[[keys]]`, when keys are configured.
    Client,
    /// The queue API and `/metrics`: the admin login (or loopback, when no `admin_key`
    /// is set), and POSTs only from the panel's own origin.
    Admin,
    /// Logging in and out: open, but POSTs only from the panel's own origin.
    Session,
}

type Routes = Vec<(&'static str, Access, MethodRouter<Arc<Runtime>>)>;

/// Every route the API serves, with its access level.
fn routes() -> Routes {
    use Access::{Admin, Client, Public, Session};
    let mut routes: Routes = vec![
        ("/healthz", Public, get(healthz)),
        ("/readyz", Public, get(readyz)),
        ("/v1/models", Client, get(models)),
        ("/v1/models/{model}", Client, get(model)),
        ("/v1/chat/completions", Client, post(chat)),
        ("/v1/completions", Client, post(completions)),
        ("/api/queue", Admin, get(queue_list)),
        ("/api/queue/events", Admin, get(queue_events)),
        ("/api/queue/stop-all", Admin, post(queue_stop_all)),
        ("/api/queue/clear", Admin, post(queue_clear)),
        ("/api/queue/{id}", Admin, get(queue_get)),
        ("/api/queue/{id}/cancel", Admin, post(queue_cancel)),
        ("/api/queue/{id}/stop", Admin, post(queue_stop)),
        ("/api/status", Admin, get(status)),
        (
            "/api/lanes/{lane}/view",
            Admin,
            get(crate::remote_login::view),
        ),
        (
            "/api/lanes/{lane}/view/input",
            Admin,
            post(crate::remote_login::input),
        ),
        ("/metrics", Admin, get(metrics)),
        ("/api/login", Session, post(login)),
        ("/api/logout", Session, post(logout)),
    ];
    routes.extend(
        crate::panel::routes()
            .into_iter()
            .chain(crate::remote_login::page_routes())
            .map(|(path, handler)| (path, Public, handler)),
    );
    routes
}

/// Every route's path and access level, as [`router`] serves them.
pub fn access_table() -> Vec<(&'static str, Access)> {
    routes()
        .into_iter()
        .map(|(path, access, _)| (path, access))
        .collect()
}

pub fn router(runtime: Arc<Runtime>) -> Router {
    let mut groups: HashMap<Access, Router<Arc<Runtime>>> = HashMap::new();
    for (path, access, handler) in routes() {
        let group = groups.entry(access).or_default();
        *group = std::mem::take(group).route(path, handler);
    }
    let rt = &runtime;
    let app = groups
        .into_iter()
        .fold(Router::new(), |app, (access, group)| {
            app.merge(match access {
                Access::Public => group,
                Access::Client => group.route_layer(from_fn_with_state(rt.clone(), require_key)),
                Access::Admin => group.route_layer(from_fn_with_state(rt.clone(), require_admin)),
                Access::Session => group.route_layer(axum::middleware::from_fn(same_origin_only)),
            })
        });
    app.fallback(not_found)
        .layer(from_fn_with_state(runtime.clone(), guard))
        // Bodies are read with the configured limit ([`JsonBody`]); this only lifts
        // axum's own default so that limit is the one that applies.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(runtime)
}

/// The API key's name, put on `/v1/*` requests by [`require_key`].
#[derive(Clone)]
struct ClientKey(Option<String>);

/// Around every route (and the 404 for none): the allow-list; any error response the
/// framework made (405, an extractor's rejection) turned into an OpenAI error object;
/// refusals counted for `/metrics`. What each route needs beyond that is its group's
/// layer ([`Access`]).
async fn guard(
    State(rt): State<Arc<Runtime>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let response = if rt.access().allowed(peer.ip()) {
        next.run(req).await
    } else {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            format!("{} is not in the allow list", peer.ip()),
        )
        .code("address_not_allowed")
        .into_response()
    };
    let response = as_openai_error(response, &method, &path).await;
    count_rejection(&rt, &response);
    response
}

/// Refusals before a request is queued, by the error's code.
fn count_rejection(rt: &Runtime, response: &Response) {
    let status = response.status();
    let Some(ErrorCode(code)) = response.extensions().get::<ErrorCode>().copied() else {
        return;
    };
    let counted = matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
        || matches!(code, "queue_full" | "client_busy" | "body_too_large");
    if counted {
        rt.rejected(status.as_u16(), code);
    }
}

/// An error response that is not JSON — made by axum, not by prq's handlers (405,
/// a rejected extractor) — as an OpenAI error object, keeping its status and headers
/// (405's `Allow`).
async fn as_openai_error(response: Response, method: &axum::http::Method, path: &str) -> Response {
    let status = response.status();
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // What the framework says is a line of text; more is not worth reading.
    let said = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let (kind, code, message) = match status {
        StatusCode::METHOD_NOT_ALLOWED => (
            "invalid_request_error",
            "method_not_allowed",
            format!("{method} is not allowed on {path}"),
        ),
        s if s.is_server_error() => ("server_error", "internal_error", said),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ("invalid_request_error", "unsupported_media_type", said)
        }
        StatusCode::PAYLOAD_TOO_LARGE => ("invalid_request_error", "body_too_large", said),
        _ => ("invalid_request_error", "invalid_request", said),
    };
    let message = if message.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        message
    };
    let (fresh, body) = ApiError::new(status, kind, message)
        .code(code)
        .into_response()
        .into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.extend(fresh.headers);
    parts.extensions.extend(fresh.extensions);
    Response::from_parts(parts, body)
}

/// [`Access::Client`]: a valid API key when keys are configured; its name goes on
/// the request for the queue to show.
async fn require_key(
    State(rt): State<Arc<Runtime>>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match rt.access().client_key(req.headers()) {
        Ok(name) => {
            req.extensions_mut().insert(ClientKey(name));
            next.run(req).await
        }
        Err(_) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "a valid API key is needed: send `Authorization: Bearer <key>` with a key from the config's [[keys]]",
        )
        .code("invalid_api_key")
        .into_response(),
    }
}

/// [`Access::Admin`]: same-origin POSTs, then the admin login.
async fn require_admin(
    State(rt): State<Arc<Runtime>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(refusal) = cross_site(&req) {
        return refusal.into_response();
    }
    let access = rt.access();
    if access.check_admin(req.headers(), peer.ip()).is_ok() {
        return next.run(req).await;
    }
    let refusal = if access.has_admin_key() {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "log in with the admin key (POST /api/login, or `Authorization: Bearer <admin_key>`)",
        )
        .code("admin_required")
    } else {
        // No login can help here: say so with a code of its own.
        ApiError::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            "the queue API is open to loopback clients only; set admin_key in the config to use it from elsewhere",
        )
        .code("admin_not_configured")
    };
    refusal.into_response()
}

/// [`Access::Session`]: same-origin POSTs.
async fn same_origin_only(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match cross_site(&req) {
        Some(refusal) => refusal.into_response(),
        None => next.run(req).await,
    }
}

/// The refusal of a POST a page of another site made (the session cookie would go
/// with it).
fn cross_site(req: &axum::extract::Request) -> Option<ApiError> {
    let refused = req.method() == axum::http::Method::POST && !auth::same_origin(req.headers());
    refused.then(|| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            "cross-site requests are refused",
        )
        .code("cross_origin")
    })
}

/// Who sent an OpenAI request, as the queue shows it: its API key's name, or its
/// address when no keys are configured.
struct Client(String);

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        let key = parts
            .extensions
            .get::<ClientKey>()
            .and_then(|k| k.0.clone());
        let peer = || {
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(peer)| peer.ip().to_string())
        };
        Ok(Client(key.or_else(peer).unwrap_or_default()))
    }
}

/// A request body that says it is JSON, read under `[limits]` ([`read_body`]).
struct JsonBody(Bytes);

impl FromRequest<Arc<Runtime>> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(
        req: axum::extract::Request,
        rt: &Arc<Runtime>,
    ) -> Result<Self, ApiError> {
        check_json(req.headers())?;
        let (parts, body) = req.into_parts();
        read_body(rt, &parts.headers, body).await.map(JsonBody)
    }
}

#[derive(serde::Deserialize)]
struct Login {
    key: String,
}

/// Trades the admin key for an HttpOnly, SameSite=Strict session cookie.
async fn login(State(rt): State<Arc<Runtime>>, Json(login): Json<Login>) -> Response {
    match rt.access().login(&login.key) {
        Some(token) => {
            let cookie = format!(
                "{}={token}; HttpOnly; SameSite=Strict; Path=/",
                auth::SESSION_COOKIE
            );
            (StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response()
        }
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "wrong admin key",
        )
        .code("invalid_admin_key")
        .into_response(),
    }
}

async fn logout(State(rt): State<Arc<Runtime>>, headers: HeaderMap) -> Response {
    rt.access().logout(&headers);
    let cookie = format!(
        "{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
        auth::SESSION_COOKIE
    );
    (StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response()
}

/// Reads the body up to the configured limit: 413 at once when the request announces
/// more (`Content-Length`), or as soon as more arrives; 408 when it has not all arrived
/// within `limits.body_timeout_s`.
async fn read_body(
    rt: &Runtime,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<Bytes, ApiError> {
    let limits = rt.limits();
    let limit = limits.max_body_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("the request body is over the limit of {limit} bytes (limits.max_body_bytes)"),
        )
        .code("body_too_large")
    };
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let deadline = Duration::from_secs_f64(limits.body_timeout_s);
    match tokio::time::timeout(deadline, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(too_large()),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            format!(
                "the request body did not arrive within {} s (limits.body_timeout_s)",
                limits.body_timeout_s
            ),
        )
        .code("body_timeout")),
    }
}

/// The per-request limits on what was parsed.
fn check_limits(rt: &Runtime, req: &Request) -> Result<(), ApiError> {
    let limits = rt.limits();
    if req.messages.len() > limits.max_messages {
        return Err(ApiError::invalid(format!(
            "{} messages is over the limit of {} (limits.max_messages)",
            req.messages.len(),
            limits.max_messages
        ))
        .param("messages"));
    }
    let chars = req.prompt_chars();
    if chars > limits.max_prompt_chars {
        return Err(ApiError::invalid(format!(
            "the prompt's {chars} characters are over the limit of {} (limits.max_prompt_chars)",
            limits.max_prompt_chars
        ))
        .param("messages"));
    }
    Ok(())
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "no such endpoint; see /v1/models, /v1/chat/completions, /v1/completions",
    )
    .code("not_found")
}

async fn healthz(State(rt): State<Arc<Runtime>>) -> Json<Value> {
    let status = rt.status();
    Json(json!({"status": "ok", "runtime": status.runtime.state}))
}

/// Readiness for a load balancer: 200 when this host takes requests, else 503; the
/// body names the state and the reason. Open like `/healthz`; only a client with admin
/// access (as for `/api/*`) also gets the runtime's own reason, the lanes' states and
/// the queue's counts.
async fn readyz(
    State(rt): State<Arc<Runtime>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let ready = rt.readiness();
    let mut body = json!(ready);
    if rt.access().check_admin(&headers, peer.ip()).is_ok() {
        let status = rt.status();
        body["detail"] = json!({
            "runtime_reason": status.runtime.reason,
            "lanes": status.lanes.iter().map(|l| json!({"id": l.id, "state": l.state})).collect::<Vec<_>>(),
            "queue": status.queue,
        });
    }
    let code = if ready.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

fn model_object(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": 0, "owned_by": "prq"})
}

async fn models(State(rt): State<Arc<Runtime>>) -> Json<Value> {
    let data: Vec<Value> = rt.models().iter().map(|id| model_object(id)).collect();
    Json(json!({"object": "list", "data": data}))
}

/// `GET /v1/models/{model}`: one model, for clients that check the model they were
/// given before using it; an ID that does not route is the same 404 a chat request gets.
async fn model(State(rt): State<Arc<Runtime>>, Path(model): Path<String>) -> Response {
    let served = rt.models();
    if served.contains(&model) {
        Json(model_object(&model)).into_response()
    } else {
        ApiError::from(SubmitError::UnknownModel { model, served }).into_response()
    }
}

fn check_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let ok = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.starts_with("application/json"));
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request_error",
            "send the request body as JSON with `Content-Type: application/json`",
        ))
    }
}

async fn chat(State(rt): State<Arc<Runtime>>, client: Client, body: JsonBody) -> Response {
    serve(rt, client, body, Request::parse_chat).await
}

async fn completions(State(rt): State<Arc<Runtime>>, client: Client, body: JsonBody) -> Response {
    serve(rt, client, body, Request::parse_completion).await
}

async fn serve(
    rt: Arc<Runtime>,
    Client(client): Client,
    JsonBody(body): JsonBody,
    parse: fn(&[u8]) -> Result<Request, ApiError>,
) -> Response {
    let parsed = parse(&body).and_then(|req| check_limits(&rt, &req).map(|()| req));
    if body.len() >= crate::memory::LARGE_BODY {
        crate::memory::give_back_soon();
    }
    match parsed {
        Ok(req) => respond(rt, req, client).await,
        Err(e) => e.into_response(),
    }
}

// ----- the queue API -----

/// Finished requests `GET /api/queue` lists after the live ones.
pub const FINISHED_LISTED: usize = 20;

async fn queue_list(State(rt): State<Arc<Runtime>>) -> Json<QueueView> {
    Json(rt.queue_view(FINISHED_LISTED))
}

fn parse_id(raw: &str) -> Result<RequestId, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::invalid(format!(
            "{raw:?} is not a request ID (a positive whole number)"
        ))
        .param("id")
    })
}

impl From<ActionError> for ApiError {
    fn from(e: ActionError) -> Self {
        let message = e.to_string();
        match e {
            ActionError::NotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", message)
                    .code("not_found")
            }
            ActionError::WrongState { .. } => {
                ApiError::new(StatusCode::CONFLICT, "invalid_request_error", message)
                    .code("conflict")
            }
        }
    }
}

async fn queue_get(
    State(rt): State<Arc<Runtime>>,
    Path(raw): Path<String>,
) -> Result<Json<RequestView>, ApiError> {
    let id = parse_id(&raw)?;
    rt.request_view(id)
        .map(Json)
        .ok_or_else(|| ActionError::NotFound(id).into())
}

async fn queue_cancel(
    State(rt): State<Arc<Runtime>>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&raw)?;
    rt.cancel(id)?;
    Ok(Json(json!({"ids": [id]})))
}

async fn queue_stop(
    State(rt): State<Arc<Runtime>>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&raw)?;
    rt.stop(id)?;
    Ok(Json(json!({"ids": [id]})))
}

async fn queue_stop_all(State(rt): State<Arc<Runtime>>) -> Json<Value> {
    Json(json!({"ids": rt.stop_all()}))
}

async fn queue_clear(State(rt): State<Arc<Runtime>>) -> Json<Value> {
    Json(json!({"ids": rt.clear()}))
}

/// Every request state change as an SSE event (`data:` the request as listed). A
/// subscriber that falls behind gets a `resync` event: re-read `GET /api/queue`.
async fn queue_events(
    State(rt): State<Arc<Runtime>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = BroadcastStream::new(rt.subscribe()).map(|item| {
        Ok(match item {
            Ok(QueueEvent::Request(v)) => json_event("request", &v),
            Ok(QueueEvent::Status(v)) => json_event("status", &v),
            Err(BroadcastStreamRecvError::Lagged(n)) => Event::default()
                .event("resync")
                .data(json!({"missed": n}).to_string()),
        })
    });
    let hello = stream::once(async { Ok(Event::default().event("hello").data("{}")) });
    Sse::new(hello.chain(events)).keep_alive(KeepAlive::new().interval(rt.keep_alive()))
}

fn json_event(name: &str, data: &impl serde::Serialize) -> Event {
    Event::default()
        .event(name)
        .data(serde_json::to_string(data).unwrap_or_default())
}

/// The status report (as `prq status --json`), with each running browser's memory.
async fn status(State(rt): State<Arc<Runtime>>) -> Json<Value> {
    let status = rt.status();
    let mut v = serde_json::to_value(&status).unwrap_or_default();
    for (lane, out) in status
        .lanes
        .iter()
        .zip(v["lanes"].as_array_mut().into_iter().flatten())
    {
        out["browser_pss_kb"] = json!(lane.worker_pid.and_then(crate::procinfo::browser_pss_kb));
    }
    Json(v)
}

async fn metrics(State(rt): State<Arc<Runtime>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        rt.metrics_text(),
    )
        .into_response()
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        let message = e.to_string();
        match e {
            SubmitError::RuntimeStopped { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "runtime_stopped", message)
                    .code("runtime_stopped")
            }
            SubmitError::UnknownModel { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", message)
                    .code("model_not_found")
                    .param("model")
            }
            SubmitError::QueueFull(_) => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message)
                    .code("queue_full")
            }
            SubmitError::ClientBusy { .. } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message)
                    .code("client_busy")
            }
            SubmitError::Cooling { retry_after_s, .. } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message)
                    .code("rate_limited")
                    .retry_after(retry_after_s)
            }
            // Refused before admission: a balancer may send it to another host.
            SubmitError::Draining(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "draining", message).code("draining")
            }
        }
    }
}

/// The error a client gets for a request that did not complete; `None` for completed.
fn end_error(end: &End, id: u64, lane: Option<&str>) -> Option<ApiError> {
    let on_lane = lane.map_or_else(String::new, |l| format!(" on lane {l}"));
    Some(match end {
        End::Completed => return None,
        End::Cancelled => ApiError::new(
            StatusCode::CONFLICT,
            "request_cancelled",
            format!("request {id} was cancelled before it started"),
        )
        .code("request_cancelled"),
        End::Stopped => ApiError::new(
            StatusCode::CONFLICT,
            "request_stopped",
            format!("request {id} was stopped{on_lane}"),
        )
        .code("request_stopped"),
        End::TimedOut(deadline) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timed_out",
            format!(
                "request {id} ran out of time{on_lane}: its {} deadline passed (see [deadlines] in the config)",
                deadline.as_str()
            ),
        )
        .code("timed_out"),
        End::Failed(Failed::LaneCrashed { lane, cause, restarting }) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "lane_crashed",
            if *restarting {
                format!("lane {lane} crashed while serving request {id}: {cause}; the lane is restarting (on_lane_crash = \"restart\"): retry the request")
            } else {
                format!("lane {lane} crashed while serving request {id}: {cause}; run `prq start` to start the runtime again")
            },
        )
        .code("lane_crashed"),
        End::Failed(Failed::ClientTooSlow { budget }) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "client_too_slow",
            format!("request {id} was stopped{on_lane}: its client fell {budget} bytes behind reading the answer (limits.client_buffer_bytes)"),
        )
        .code("client_too_slow"),
        End::Failed(Failed::LaneRemoved { prefix }) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "lane_removed",
            format!("request {id} waited for `{prefix}`, whose lanes a reload removed (prq reload); send it to a model that is served (GET /v1/models)"),
        )
        .code("lane_removed"),
        End::Failed(Failed::RuntimeStopped { reason }) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "runtime_stopped",
            format!("the runtime stopped ({reason}); run `prq start` to start it again"),
        )
        .code("runtime_stopped"),
        End::Failed(Failed::Site(f)) => {
            let status = match f.kind {
                FailureKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
                FailureKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
                FailureKind::ModelUnavailable => StatusCode::BAD_REQUEST,
                _ => StatusCode::BAD_GATEWAY,
            };
            let e = ApiError::new(status, "provider_error", format!("{}{on_lane}", f.message))
                .code(f.kind.code());
            match f.retry_after_s {
                Some(secs) => e.retry_after(secs),
                None => e,
            }
        }
    })
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The request's attachments, decoded or fetched into its own directory under the
/// limits of the lanes its model routes to (and a long conversation as a file, with the
/// message typed in its place); none when it has none or its model routes nowhere
/// (admission then says so).
async fn attachments(
    rt: &Runtime,
    req: &Request,
) -> Result<Option<(Prepared, Option<ChatMessage>)>, ApiError> {
    let Some((provider, rules)) = rt.attachment_rules(&req.model) else {
        return Ok(None);
    };
    let long = attachments::long_prompt(&req.messages, &rules);
    if req.attachments.is_empty() && long.is_none() {
        return Ok(None);
    }
    let (conversation, typed) = long.unzip();
    let prepared = attachments::prepare(
        &rt.uploads_dir(),
        &rt.fetch_config(),
        &req.attachments,
        req.last_user,
        conversation.as_deref(),
        &rules,
        &provider,
    )
    .await?;
    Ok(Some((prepared, typed)))
}

impl From<Refusal> for ApiError {
    fn from(e: Refusal) -> Self {
        let message = e.to_string();
        match e {
            Refusal::Invalid { .. } => ApiError::invalid(message)
                .param("messages")
                .code("attachment_refused"),
            Refusal::Fetch { .. } => ApiError::invalid(message)
                .param("messages")
                .code("attachment_fetch_failed"),
            Refusal::Io(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
            }
        }
    }
}

async fn respond(rt: Arc<Runtime>, req: Request, client: String) -> Response {
    let prepared = match attachments(&rt, &req).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let (attachments, files, typed) = match prepared {
        Some((p, typed)) => (p.attachments, Some(p.dir), typed),
        None => (Vec::new(), None, None),
    };
    let sub = Submission {
        settings: req.settings,
        search_tool: req.search_tool,
        attachments,
        files,
        messages: typed.map_or_else(|| req.messages.clone(), |m| vec![m]),
        meta: Meta {
            model: req.model.clone(),
            kind: match req.kind {
                openai::Kind::Chat => "chat",
                openai::Kind::Completion => "completion",
            },
            client,
            messages: req.messages.len(),
            prompt_chars: req.prompt_chars(),
            stream: req.stream,
            admitted_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        },
    };
    let tooled = req
        .plan
        .clone()
        .and_then(|plan| Tooled::new(rt.clone(), plan, sub.clone(), rt.tool_retries()));
    let ticket = match rt.submit(sub) {
        Ok(t) => t,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let id = ticket.id;
    let turn = Turn::new(ticket, tooled);
    // A non-streaming client that goes away drops this handler's future (hyper sees
    // the EOF), and with it the ticket.
    let mut response = if req.stream {
        let keep_alive = rt.keep_alive();
        stream_response(rt, req, turn, keep_alive).into_response()
    } else {
        whole_response(&rt, req, turn).await
    };
    response
        .headers_mut()
        .insert(REQUEST_ID_HEADER, HeaderValue::from(id));
    response
}

/// Accumulated output of one request.
#[derive(Default)]
struct Output {
    reasoning: String,
    answer: String,
    lane: Option<String>,
    calls: Vec<ToolCall>,
    /// Why the reply went out as text although tools or a format were asked for.
    tool_error: Option<String>,
}

impl Output {
    fn chars(&self) -> usize {
        let calls: usize = self.calls.iter().map(|c| c.arguments.chars().count()).sum();
        self.reasoning.chars().count() + self.answer.chars().count() + calls
    }
}

fn chat_id(kind: openai::Kind, id: u64) -> String {
    match kind {
        openai::Kind::Chat => format!("chatcmpl-prq-{id}"),
        openai::Kind::Completion => format!("cmpl-prq-{id}"),
    }
}

async fn whole_response(rt: &Runtime, req: Request, mut turn: Turn) -> Response {
    let mut out = Output::default();
    let mut stops = StopScan::new(req.stop.clone());
    let end = loop {
        match turn.recv().await {
            Some(TurnEvent::Req(ReqEvent::Started { lane })) => out.lane = Some(lane),
            Some(TurnEvent::Req(ReqEvent::Delta { kind, text })) => match kind {
                DeltaKind::Reasoning => out.reasoning.push_str(&text),
                DeltaKind::Answer => {
                    let (text, reached) = stops.push(text);
                    out.answer.push_str(&text);
                    if reached {
                        // The answer is complete; the site is stopped behind it, and
                        // dropping the ticket then changes nothing.
                        rt.stop_string_reached(turn.current());
                        break End::Completed;
                    }
                }
            },
            Some(TurnEvent::Req(ReqEvent::End(end))) => {
                out.answer.push_str(&stops.finish());
                break end;
            }
            Some(TurnEvent::Calls(calls)) => out.calls = calls,
            Some(TurnEvent::Note(note)) => out.tool_error = Some(note),
            Some(TurnEvent::Refused(e)) => return e.into_response(),
            None => break shutting_down(),
        }
    };
    if let Some(err) = end_error(&end, turn.id(), out.lane.as_deref()) {
        return err.into_response();
    }
    let id = chat_id(req.kind, turn.id());
    let shape = Shape {
        kind: req.kind,
        id: &id,
        created: now_secs(),
        model: &req.model,
    };
    let usage = openai::usage(req.prompt_chars(), out.chars());
    let body = shape.complete(&out.reasoning, &out.answer, &out.calls, usage);
    let mut response = Json(body).into_response();
    if let Some(note) = &out.tool_error {
        response
            .headers_mut()
            .insert(TOOL_ERROR_HEADER, header_text(note));
    }
    response
}

/// `text` as a header value: one line of visible ASCII (what is not becomes `?`).
fn header_text(text: &str) -> HeaderValue {
    let line: String = text
        .chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .collect();
    HeaderValue::from_str(&line).unwrap_or(HeaderValue::from_static("invalid reply"))
}

/// A ticket whose sender is gone without an end event: only a daemon going down
/// drops its jobs that way.
fn shutting_down() -> End {
    End::Failed(Failed::RuntimeStopped {
        reason: "the daemon is shutting down".into(),
    })
}

fn stream_response(
    rt: Arc<Runtime>,
    req: Request,
    turn: Turn,
    keep_alive: Duration,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let id = chat_id(req.kind, turn.id());
    let created = now_secs();
    let state = StreamState {
        rt,
        stops: StopScan::new(req.stop.clone()),
        req,
        id,
        created,
        turn,
        out: Output::default(),
        phase: Phase::Role,
        held: None,
        outgoing: VecDeque::new(),
    };
    let events = stream::unfold(state, |mut s| async move {
        let event = s.next_event().await?;
        Some((Ok(event), s))
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(keep_alive))
}

enum Phase {
    Role,
    Body,
    /// The answer is complete: the finishing chunk is next.
    Finish,
    Usage,
    Done,
    Closed,
}

struct StreamState {
    rt: Arc<Runtime>,
    /// The request's `stop` strings, applied to the answer.
    stops: StopScan,
    req: Request,
    id: String,
    created: u64,
    turn: Turn,
    out: Output,
    phase: Phase,
    /// An event read while merging deltas, to be handled next.
    held: Option<TurnEvent>,
    /// Chunks made and not yet sent (a reply's tool calls).
    outgoing: VecDeque<Value>,
}

impl StreamState {
    /// The next event; a text delta absorbs the deltas of the same kind already waiting
    /// behind it, so text that arrived together goes out as one chunk (and one write)
    /// instead of one per piece. Nothing waits for more: only what is already there.
    async fn next_merged(&mut self) -> TurnEvent {
        let event = match self.held.take() {
            Some(e) => e,
            None => self
                .turn
                .recv()
                .await
                .unwrap_or_else(|| TurnEvent::Req(ReqEvent::End(shutting_down()))),
        };
        let TurnEvent::Req(ReqEvent::Delta { kind, mut text }) = event else {
            return event;
        };
        while let Some(next) = self.turn.try_recv() {
            match next {
                TurnEvent::Req(ReqEvent::Delta {
                    kind: k,
                    text: more,
                }) if k == kind => text.push_str(&more),
                other => {
                    self.held = Some(other);
                    break;
                }
            }
        }
        TurnEvent::Req(ReqEvent::Delta { kind, text })
    }

    fn shape(&self) -> Shape<'_> {
        Shape {
            kind: self.req.kind,
            id: &self.id,
            created: self.created,
            model: &self.req.model,
        }
    }

    fn data(v: Value) -> Event {
        Event::default().data(v.to_string())
    }

    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(chunk) = self.outgoing.pop_front() {
                return Some(Self::data(chunk));
            }
            match self.phase {
                Phase::Role => {
                    self.phase = Phase::Body;
                    if let Some(chunk) = self.shape().role_chunk() {
                        return Some(Self::data(chunk));
                    }
                }
                Phase::Body => match self.next_merged().await {
                    TurnEvent::Calls(calls) => {
                        self.outgoing = self.shape().tool_call_chunks(&calls).into();
                        self.out.calls = calls;
                    }
                    TurnEvent::Note(note) => self.out.tool_error = Some(note),
                    TurnEvent::Refused(e) => {
                        self.phase = Phase::Done;
                        return Some(Self::data(e.body()));
                    }
                    TurnEvent::Req(ReqEvent::Started { lane }) => self.out.lane = Some(lane),
                    TurnEvent::Req(ReqEvent::Delta { kind, text }) => {
                        let reasoning = kind == DeltaKind::Reasoning;
                        let text = match kind {
                            DeltaKind::Reasoning => {
                                self.out.reasoning.push_str(&text);
                                text
                            }
                            DeltaKind::Answer => {
                                let (text, reached) = self.stops.push(text);
                                if reached {
                                    self.rt.stop_string_reached(self.turn.current());
                                    self.phase = Phase::Finish;
                                }
                                self.out.answer.push_str(&text);
                                text
                            }
                        };
                        if text.is_empty() {
                            continue;
                        }
                        if let Some(chunk) = self.shape().text_chunk(&text, reasoning) {
                            return Some(Self::data(chunk));
                        }
                    }
                    TurnEvent::Req(ReqEvent::End(end)) => {
                        // Text held back as the possible start of a stop string goes
                        // out before the end, whatever the end is.
                        let tail = self.stops.finish();
                        if !tail.is_empty() {
                            self.out.answer.push_str(&tail);
                            self.held = Some(TurnEvent::Req(ReqEvent::End(end)));
                            if let Some(chunk) = self.shape().text_chunk(&tail, false) {
                                return Some(Self::data(chunk));
                            }
                            continue;
                        }
                        match end_error(&end, self.turn.id(), self.out.lane.as_deref()) {
                            Some(err) => {
                                self.phase = Phase::Done;
                                return Some(Self::data(err.body()));
                            }
                            None => self.phase = Phase::Finish,
                        }
                    }
                },
                Phase::Finish => {
                    self.phase = if self.req.include_usage {
                        Phase::Usage
                    } else {
                        Phase::Done
                    };
                    let chunk = self
                        .shape()
                        .finish_chunk(!self.out.calls.is_empty(), self.out.tool_error.as_deref());
                    return Some(Self::data(chunk));
                }
                Phase::Usage => {
                    self.phase = Phase::Done;
                    let usage = openai::usage(self.req.prompt_chars(), self.out.chars());
                    return Some(Self::data(self.shape().usage_chunk(usage)));
                }
                Phase::Done => {
                    self.phase = Phase::Closed;
                    return Some(Event::default().data("[DONE]"));
                }
                Phase::Closed => return None,
            }
        }
    }
}
