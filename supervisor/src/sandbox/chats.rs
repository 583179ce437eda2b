//! The sandbox site's chat list: every send makes a chat in its account's list (but in
//! temporary mode), the page shows the list in a sidebar with a delete button per chat,
//! and `GET /api/chats?account=NAME` lists what an account has, so that tests can check
//! that `after_reply = "delete"` leaves none behind. A chat whose request carried
//! `sandbox: delete_fails` refuses its delete (HTTP 500), as a site's delete can fail.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::account_of;

/// Characters of the prompt a chat's title keeps.
const TITLE_CHARS: usize = 40;

/// Every account's chats.
#[derive(Clone, Default)]
pub(super) struct Chats(Arc<Mutex<Inner>>);

#[derive(Default)]
struct Inner {
    next_id: u64,
    /// By account ("" for a page without one), oldest first.
    by_account: HashMap<String, Vec<Chat>>,
}

#[derive(Debug, Clone, Serialize)]
struct Chat {
    id: u64,
    title: String,
    #[serde(skip)]
    deletable: bool,
}

impl Chats {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update is one push or one removal: consistent even after a panic.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes a chat for a send from `account`; its ID.
    pub(super) fn open(&self, account: Option<&str>, prompt: &str, deletable: bool) -> u64 {
        let mut inner = self.lock();
        inner.next_id += 1;
        let id = inner.next_id;
        let title = prompt.chars().take(TITLE_CHARS).collect();
        let chats = inner
            .by_account
            .entry(account.unwrap_or_default().to_owned())
            .or_default();
        chats.push(Chat {
            id,
            title,
            deletable,
        });
        id
    }
}

/// `/api/chats` and `/api/chats/{id}`.
pub(super) fn routes() -> Router<Chats> {
    Router::new()
        .route("/api/chats", get(list))
        .route("/api/chats/{id}", delete(remove))
}

#[derive(Deserialize)]
struct ListQuery {
    account: Option<String>,
}

#[derive(Serialize)]
struct Listing {
    chats: Vec<Chat>,
}

/// The chats of `?account=NAME`, or else of the page's own account (its cookie).
async fn list(
    State(chats): State<Chats>,
    Query(query): Query<ListQuery>,
    headers: HeaderMap,
) -> Json<Listing> {
    let account = query.account.or_else(|| account_of(&headers));
    let inner = chats.lock();
    let list = inner
        .by_account
        .get(account.as_deref().unwrap_or_default())
        .cloned()
        .unwrap_or_default();
    Json(Listing { chats: list })
}

/// Deletes one of the page's account's chats: 204, 404 when it has no such chat, 500
/// for a chat that refuses (`delete_fails`).
async fn remove(State(chats): State<Chats>, Path(id): Path<u64>, headers: HeaderMap) -> Response {
    let account = account_of(&headers).unwrap_or_default();
    let mut inner = chats.lock();
    let Some(list) = inner.by_account.get_mut(&account) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match list.iter().position(|c| c.id == id) {
        None => StatusCode::NOT_FOUND.into_response(),
        Some(at) if !list[at].deletable => {
            tracing::debug!(chat = id, "sandbox: this chat refuses its delete");
            let body = serde_json::json!({ "error": "sandbox: this chat cannot be deleted (delete_fails)" });
            (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response()
        }
        Some(at) => {
            list.remove(at);
            StatusCode::NO_CONTENT.into_response()
        }
    }
}
