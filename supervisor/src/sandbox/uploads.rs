//! The sandbox's uploads, as a chat site takes them: its page sends each chosen file to
//! `POST /api/upload?name=NAME` as the request body (what `fetch` does with a `File`),
//! the server keeps the file's name, size and sha256 under a new ID and the page sends
//! the IDs with its prompt; the answer then begins with one `attached: NAME SIZE SHA256`
//! line per file, so a test sees that exactly the client's bytes arrived. The bytes
//! themselves are hashed as they come and not kept.
//!
//! `sandbox: reject_upload=1` in the draft (the page sends its prompt box's `sandbox:`
//! line along with each upload) makes the server refuse the upload with HTTP 422 and an
//! error text that the page shows, as a site shows "file too large".

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use prq_protocol::script::Directives;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The largest file the sandbox takes (`/api/upload`'s body limit): above the real
/// sites' own limits, so that prq's limits, not the sandbox's, are what tests meet.
pub const MAX_UPLOAD_BYTES: usize = 128 * 1024 * 1024;

/// Uploads kept until a prompt names them; the oldest go first.
const MAX_KEPT: usize = 1_000;

/// One file the site took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Uploaded {
    pub name: String,
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
}

impl Uploaded {
    /// The answer's line for this file.
    pub fn line(&self) -> String {
        format!("attached: {} {} {}", self.name, self.size, self.sha256)
    }
}

/// The files uploaded and not yet sent with a prompt, by ID.
#[derive(Clone, Default)]
pub struct Uploads {
    kept: Arc<Mutex<Kept>>,
}

#[derive(Default)]
struct Kept {
    next_id: u64,
    files: BTreeMap<u64, Uploaded>,
}

impl Uploads {
    fn kept(&self) -> MutexGuard<'_, Kept> {
        // Each update is one insertion or removal: consistent even after a panic.
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn keep(&self, file: Uploaded) -> u64 {
        let mut kept = self.kept();
        kept.next_id += 1;
        let id = kept.next_id;
        if kept.files.len() == MAX_KEPT {
            kept.files.pop_first();
        }
        kept.files.insert(id, file);
        id
    }

    /// The files a prompt names, in its order; they are used up. An ID the site does
    /// not know is an error naming it, as a site refuses a stale attachment.
    pub fn take(&self, ids: &[u64]) -> Result<Vec<Uploaded>, String> {
        let mut kept = self.kept();
        ids.iter()
            .map(|id| {
                kept.files
                    .remove(id)
                    .ok_or_else(|| format!("sandbox: no uploaded file {id}"))
            })
            .collect()
    }
}

#[derive(Deserialize)]
pub struct UploadQuery {
    name: String,
    /// The `sandbox:` line of the page's prompt box, if it has one.
    #[serde(default)]
    draft: String,
}

/// `POST /api/upload?name=NAME&draft=LINE`: `{"id": N}`, or 4xx `{"error": "..."}`.
pub async fn upload(
    State(uploads): State<Uploads>,
    Query(query): Query<UploadQuery>,
    body: Body,
) -> Response {
    let refuse = |status: StatusCode, error: String| {
        (status, Json(serde_json::json!({ "error": error }))).into_response()
    };
    if query.name.is_empty() {
        return refuse(
            StatusCode::BAD_REQUEST,
            "sandbox: a file needs a name".into(),
        );
    }
    let directives = match Directives::parse(&query.draft) {
        Ok(d) => d,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e),
    };
    tokio::time::sleep(directives.upload_delay).await;
    match directives {
        d if d.reject_upload => {
            return refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "sandbox: {} was refused (reject_upload=1): this site does not take it",
                    query.name
                ),
            )
        }
        _ => {}
    }
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => {
                size += bytes.len() as u64;
                hasher.update(&bytes);
            }
            Err(e) => {
                return refuse(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "sandbox: {} is too large or broke off ({e}); the limit is {MAX_UPLOAD_BYTES} bytes",
                        query.name
                    ),
                )
            }
        }
    }
    let sha256 = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    tracing::debug!(size, "sandbox: file uploaded");
    let id = uploads.keep(Uploaded {
        name: query.name,
        size,
        sha256,
    });
    Json(serde_json::json!({ "id": id })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prompt_takes_its_files_once_and_in_its_order() {
        let uploads = Uploads::default();
        let file = |name: &str| Uploaded {
            name: name.into(),
            size: 1,
            sha256: "ab".into(),
        };
        let a = uploads.keep(file("a.png"));
        let b = uploads.keep(file("b.pdf"));
        let taken = uploads.take(&[b, a]).unwrap();
        assert_eq!(taken, [file("b.pdf"), file("a.png")]);
        assert_eq!(taken[0].line(), "attached: b.pdf 1 ab");
        let e = uploads.take(&[a]).unwrap_err();
        assert!(e.contains(&a.to_string()), "{e}");
    }
}
