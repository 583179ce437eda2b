//! What a client attaches (`image_url` and `file` content parts) on its way to a lane's
//! page: the parts as `openai.rs` read them ([`Part`]), each lane's limits ([`Rules`],
//! `rules.rs`), fetching `https` images (`fetch.rs`), and the request's private
//! directory the decoded files live in until the request ends (`dir.rs`).
//!
//! The files cross to the worker as paths in that directory ([`Attachment`]), never as
//! frame payloads; the directory is removed when the last holder of its [`RequestDir`]
//! lets go (the API handler and the runtime's record of the request, so after the
//! request's terminal state, whichever it is). A daemon that died with requests in
//! flight leaves their directories behind: [`sweep`] empties `PRQ_HOME/uploads` at the
//! next start.
//!
//! A conversation longer than a lane's `long_prompt_chars`, on a lane with
//! `long_prompt = "file"`, goes as [`CONVERSATION_FILE`] with a short typed
//! instruction ([`long_prompt`]).

mod dir;
mod fetch;
mod rules;

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use prq_protocol::worker::{Attachment, ChatMessage, Role};

pub use dir::{sweep, RequestDir};
pub use fetch::FetchConfig;
pub use rules::{History, LaneAttachments, LongPrompt, Rules};

/// The name a long conversation is attached under.
pub const CONVERSATION_FILE: &str = "conversation.txt";

/// With `long_prompt = "file"` and a conversation (as the site would read it) over
/// `long_prompt_chars`: that text for [`CONVERSATION_FILE`], and the one message typed
/// instead of it.
pub fn long_prompt(messages: &[ChatMessage], rules: &Rules) -> Option<(String, ChatMessage)> {
    if rules.long_prompt != LongPrompt::File {
        return None;
    }
    let text = prq_protocol::prompt::flatten(messages);
    let chars = text.chars().count();
    if chars <= rules.long_prompt_chars {
        return None;
    }
    let instruction = format!(
        "The conversation so far is in the attached file {CONVERSATION_FILE} ({chars} characters). \
         Read all of it, then reply to its last user message as the assistant would, with that reply only."
    );
    Some((
        text,
        ChatMessage {
            role: Role::User,
            content: instruction,
        },
    ))
}

/// Where one part's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An `image_url` part's `data:` URL.
    DataUrl(String),
    /// An `image_url` part's `https` URL, for prq to fetch.
    Url(String),
    /// A `file` part: its `filename` and `file_data` (base64, or a `data:` URL).
    File { filename: String, data: String },
    /// Text prq writes itself (a long conversation).
    Text { filename: String, text: String },
}

/// One attachment as the request gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Where it is in the request, for errors: `messages[2].content[1]`.
    pub at: String,
    /// The index of its message.
    pub message: usize,
    pub source: Source,
}

/// Why a request's attachments were refused: a 400 (or, for a fetch that failed, 502)
/// that names the part, the limit and the lane's provider.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("{at}: {message}")]
    Invalid { at: String, message: String },
    #[error("{at}: the image could not be fetched: {message}")]
    Fetch { at: String, message: String },
    #[error("cannot keep the request's files: {0}")]
    Io(#[from] std::io::Error),
}

/// The request's files, decoded into its private directory.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub dir: Arc<RequestDir>,
    pub attachments: Vec<Attachment>,
}

/// Decodes (or fetches) the parts that go to the site under `rules` for `provider`:
/// with [`History::Last`], those of the last user message (`last_user`), else all;
/// checks every limit before a byte is written where the size is known, and again on
/// the bytes.
///
/// `conversation`, when given, is attached first as [`CONVERSATION_FILE`], under the
/// same limits.
pub async fn prepare(
    uploads: &Path,
    fetch: &FetchConfig,
    parts: &[Part],
    last_user: Option<usize>,
    conversation: Option<&str>,
    rules: &Rules,
    provider: &str,
) -> Result<Prepared, Refusal> {
    let conversation_part = conversation.map(|text| Part {
        at: "messages".into(),
        message: 0,
        source: Source::Text {
            filename: CONVERSATION_FILE.into(),
            text: text.to_string(),
        },
    });
    let sent: Vec<&Part> = conversation_part
        .iter()
        .chain(
            parts
                .iter()
                .filter(|p| rules.history == History::All || Some(p.message) == last_user),
        )
        .collect();
    let limit = |at: &str, message: String| Refusal::Invalid {
        at: at.to_string(),
        message: format!("{message} (lane provider `{provider}`)"),
    };
    if sent.len() > rules.max_files {
        return Err(limit(
            &sent[rules.max_files].at,
            format!(
                "{} attachments are over the limit of {} per request (attachments.max_files)",
                sent.len(),
                rules.max_files
            ),
        ));
    }
    let dir = Arc::new(RequestDir::create(uploads)?);
    let mut attachments = Vec::with_capacity(sent.len());
    let mut total = 0u64;
    for (n, part) in sent.iter().enumerate() {
        let file = match &part.source {
            Source::DataUrl(url) => decoded(part, url, None, rules)?,
            Source::File { filename, data } => decoded(part, data, Some(filename), rules)?,
            Source::Text { filename, text } => File {
                name: Some(filename.clone()),
                mime: "text/plain".into(),
                bytes: text.clone().into_bytes(),
            },
            Source::Url(url) => fetch::fetch(fetch, url, rules.max_file_bytes)
                .await
                .map_err(|message| Refusal::Fetch {
                    at: part.at.clone(),
                    message,
                })?,
        };
        let size = file.bytes.len() as u64;
        rules
            .admits(&file.mime, size)
            .map_err(|m| limit(&part.at, m))?;
        total += size;
        if total > rules.max_total_bytes {
            return Err(limit(
                &part.at,
                format!(
                    "the attachments' {total} bytes are over the limit of {} per request (attachments.max_total_bytes)",
                    rules.max_total_bytes
                ),
            ));
        }
        let name = file.name.unwrap_or_else(|| format!("attachment-{}", n + 1));
        let path = dir.write(n, &name, rules::extension(&file.mime), &file.bytes)?;
        attachments.push(Attachment {
            path,
            mime: file.mime,
            bytes: size,
        });
    }
    Ok(Prepared { dir, attachments })
}

/// A file's bytes and what is known of it.
#[derive(Debug)]
pub(crate) struct File {
    pub name: Option<String>,
    pub mime: String,
    pub bytes: Vec<u8>,
}

/// A `data:` URL's or a `file_data`'s bytes. The decoded size is checked from the
/// text's length first, so an oversized part is refused without decoding it.
fn decoded(
    part: &Part,
    data: &str,
    filename: Option<&str>,
    rules: &Rules,
) -> Result<File, Refusal> {
    let invalid = |message: String| Refusal::Invalid {
        at: part.at.clone(),
        message,
    };
    let (declared, payload) = match data.strip_prefix("data:") {
        Some(rest) => {
            let (head, payload) = rest
                .split_once(',')
                .ok_or_else(|| invalid("a data: URL needs a comma before its data".to_string()))?;
            let Some(params) = head.strip_suffix(";base64") else {
                return Err(invalid(
                    "only base64 data: URLs are taken (data:<type>;base64,<data>)".to_string(),
                ));
            };
            // `data:image/png;name=a.png;base64,`: the type is what precedes the
            // parameters.
            let mime = params.split(';').next().unwrap_or("").trim();
            (Some(mime.to_ascii_lowercase()), payload)
        }
        None if filename.is_some() => (None, data),
        None => {
            return Err(invalid(
                "an image_url must be a data: URL (base64) or an https URL".to_string(),
            ))
        }
    };
    let estimated = (payload.len() as u64 / 4) * 3;
    if estimated > rules.max_file_bytes + 3 {
        return Err(invalid(format!(
            "about {estimated} bytes, over the limit of {} per file (attachments.max_file_bytes)",
            rules.max_file_bytes
        )));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(payload.trim())
        .map_err(|e| invalid(format!("its data is not valid base64 ({e})")))?;
    let name = filename.map(rules::safe_name);
    let mime = declared
        .filter(|m| !m.is_empty())
        .or_else(|| name.as_deref().and_then(rules::mime_of_name))
        .unwrap_or_else(|| "application/octet-stream".to_string());
    Ok(File { name, mime, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(message: usize, source: Source) -> Part {
        Part {
            at: format!("messages[{message}].content[1]"),
            message,
            source,
        }
    }

    fn png(bytes: &[u8]) -> Source {
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        Source::DataUrl(format!("data:image/png;base64,{b64}"))
    }

    #[tokio::test]
    async fn the_last_user_messages_files_land_in_a_private_directory_that_goes_with_the_request() {
        use std::os::unix::fs::PermissionsExt;
        let home = tempfile::tempdir().unwrap();
        let rules = Rules::for_provider("sandbox");
        let pdf = base64::engine::general_purpose::STANDARD.encode(b"%PDF-1.4");
        let parts = [
            part(0, png(b"earlier")),
            part(2, png(b"\x89PNG now")),
            part(
                2,
                Source::File {
                    filename: "../report.pdf".into(),
                    data: pdf,
                },
            ),
        ];
        let fetch = FetchConfig::default();
        let prepared = prepare(
            home.path(),
            &fetch,
            &parts,
            Some(2),
            None,
            &rules,
            "sandbox",
        )
        .await
        .unwrap();
        let files = &prepared.attachments;
        assert_eq!(files.len(), 2, "only the last user message's");
        assert_eq!(std::fs::read(&files[0].path).unwrap(), b"\x89PNG now");
        assert_eq!(files[0].mime, "image/png");
        assert!(files[0].path.ends_with("attachment-1.png"), "{files:?}");
        assert!(files[1].path.ends_with("report.pdf"), "{files:?}");
        assert_eq!(files[1].mime, "application/pdf");
        let dir = prepared.dir.path().to_path_buf();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        drop(prepared);
        assert!(!dir.exists(), "removed with its last holder");
    }

    #[tokio::test]
    async fn history_all_attaches_every_messages_files_in_order() {
        let home = tempfile::tempdir().unwrap();
        let rules = Rules {
            history: History::All,
            ..Rules::for_provider("sandbox")
        };
        let with_name = Source::DataUrl(format!(
            "data:image/PNG;name=x.png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(b"second")
        ));
        let parts = [part(0, png(b"first")), part(2, with_name)];
        let prepared = prepare(
            home.path(),
            &FetchConfig::default(),
            &parts,
            Some(2),
            None,
            &rules,
            "sandbox",
        )
        .await
        .unwrap();
        let read: Vec<Vec<u8>> = prepared
            .attachments
            .iter()
            .map(|a| std::fs::read(&a.path).unwrap())
            .collect();
        assert_eq!(read, [b"first".to_vec(), b"second".to_vec()]);
        assert_eq!(prepared.attachments[1].mime, "image/png");
    }

    #[tokio::test]
    async fn limits_name_the_part_the_limit_and_the_provider() {
        let home = tempfile::tempdir().unwrap();
        let fetch = FetchConfig::default();
        let mut rules = Rules::for_provider("sandbox");
        rules.max_files = 1;
        let two = [part(1, png(b"a")), part(1, png(b"b"))];
        let e = prepare(home.path(), &fetch, &two, Some(1), None, &rules, "sandbox")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("messages[1].content[1]")
                && e.contains("max_files")
                && e.contains("`sandbox`"),
            "{e}"
        );
        let rules = Rules {
            max_file_bytes: 4,
            ..Rules::for_provider("sandbox")
        };
        let big = [part(1, png(b"0123456789"))];
        let e = prepare(home.path(), &fetch, &big, Some(1), None, &rules, "sandbox")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_file_bytes"), "{e}");
        let rules = Rules {
            types: vec!["application/pdf".into()],
            ..Rules::for_provider("sandbox")
        };
        let e = prepare(
            home.path(),
            &fetch,
            &[part(1, png(b"x"))],
            Some(1),
            None,
            &rules,
            "glm",
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("image/png") && e.contains("attachments.types") && e.contains("`glm`"),
            "{e}"
        );
        let bad = [part(1, Source::DataUrl("data:image/png,raw".into()))];
        let e = prepare(home.path(), &fetch, &bad, Some(1), None, &rules, "glm")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("base64"), "{e}");
        assert_eq!(
            std::fs::read_dir(home.path()).unwrap().count(),
            0,
            "refused requests leave nothing"
        );
    }
}
