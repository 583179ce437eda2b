//! Each lane's attachment limits: the provider's defaults, with `[lanes.attachments]`
//! on top; and the file names and media types they are judged by.
//!
//! The defaults for the real sites are **guesses** (no site publishes its limits in a
//! form prq could cite here): they sit at or under what each site's composer is
//! commonly seen to take, and every one is overridable. The sandbox's are its own.

use std::time::Duration;

use serde::Deserialize;

/// Which messages' attachments go to the site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum History {
    /// Only the last user message's; earlier ones are a placeholder in the text.
    Last,
    /// Every message's, in order.
    All,
}

/// How a conversation over `long_prompt_chars` reaches the site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LongPrompt {
    /// Typed into the prompt box like any other.
    Type,
    /// Attached as `conversation.txt`, with a short typed instruction to read it.
    File,
}

/// The default `long_prompt_chars`: typing cost grows with the text in the rich
/// editors some sites use (100,000 characters took 11.6 s in TipTap, GLM's and Qwen's
/// box; `worker/src/driver/web.rs`), while a text file uploads in about the time of an
/// image of its size.
pub const LONG_PROMPT_CHARS: usize = 20_000;

/// A lane's limits, with its defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub max_files: usize,
    pub max_file_bytes: u64,
    pub max_total_bytes: u64,
    /// Accepted media types: `image/png`, or a family `image/*`. Empty: the lane takes
    /// no attachments.
    pub types: Vec<String>,
    /// How long the page gets to show every file as uploaded.
    pub upload_timeout: Duration,
    pub history: History,
    pub long_prompt: LongPrompt,
    pub long_prompt_chars: usize,
}

const MIB: u64 = 1024 * 1024;

/// Images every site that takes images takes.
const IMAGES: &[&str] = &["image/png", "image/jpeg", "image/gif", "image/webp"];
const DOCUMENTS: &[&str] = &[
    "application/pdf",
    "text/*",
    "application/json",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
];

impl Rules {
    /// The provider's defaults (guesses for the real sites, see the module doc).
    pub fn for_provider(provider: &str) -> Self {
        let (max_files, max_file_mib, types): (usize, u64, Vec<&str>) = match provider {
            "sandbox" => (10, 20, [IMAGES, DOCUMENTS].concat()),
            "deepseek" | "moonshot" | "qwen" | "glm" | "aistudio" => {
                (10, 20, [IMAGES, DOCUMENTS].concat())
            }
            "perplexity" => (4, 20, [IMAGES, DOCUMENTS].concat()),
            "huggingchat" => (4, 10, IMAGES.to_vec()),
            // echo has no page to upload through.
            _ => (0, 0, Vec::new()),
        };
        Self {
            max_files,
            max_file_bytes: max_file_mib * MIB,
            max_total_bytes: max_files as u64 * max_file_mib * MIB,
            types: types.into_iter().map(str::to_string).collect(),
            upload_timeout: Duration::from_secs(60),
            history: History::Last,
            // `file` needs the site's upload control, which no real site's driver has
            // public evidence for yet, and the sandbox's textarea takes 400,000
            // characters in well under a second: every lane types unless told.
            long_prompt: LongPrompt::Type,
            long_prompt_chars: LONG_PROMPT_CHARS,
        }
    }

    /// Whether a file of `mime` and `size` bytes is taken; else why not.
    pub fn admits(&self, mime: &str, size: u64) -> Result<(), String> {
        if self.types.is_empty() {
            return Err(
                "this lane takes no attachments (set [lanes.attachments] types to allow some)"
                    .into(),
            );
        }
        let family = mime.split('/').next().unwrap_or("");
        let taken = self.types.iter().any(|t| {
            t == mime
                || t.strip_suffix("/*")
                    .is_some_and(|f| f.eq_ignore_ascii_case(family))
        });
        if !taken {
            return Err(format!(
                "a file of type {mime} is not taken by this lane's site (attachments.types: {})",
                self.types.join(", ")
            ));
        }
        if size > self.max_file_bytes {
            return Err(format!(
                "{size} bytes is over the limit of {} per file (attachments.max_file_bytes)",
                self.max_file_bytes
            ));
        }
        Ok(())
    }
}

/// `[lanes.attachments]`: overrides of the provider's defaults.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaneAttachments {
    pub max_files: Option<usize>,
    pub max_file_bytes: Option<u64>,
    pub max_total_bytes: Option<u64>,
    pub types: Option<Vec<String>>,
    pub upload_timeout_s: Option<f64>,
    pub history: Option<History>,
    pub long_prompt: Option<LongPrompt>,
    pub long_prompt_chars: Option<usize>,
}

impl LaneAttachments {
    /// The provider's defaults with these overrides; a bad value is named.
    pub fn rules(&self, provider: &str) -> Result<Rules, String> {
        let mut rules = Rules::for_provider(provider);
        if let Some(n) = self.max_files {
            rules.max_files = n;
        }
        if let Some(n) = self.max_file_bytes {
            rules.max_file_bytes = n;
        }
        if let Some(n) = self.max_total_bytes {
            rules.max_total_bytes = n;
        }
        if let Some(types) = &self.types {
            if let Some(bad) = types.iter().find(|t| t.split('/').count() != 2) {
                return Err(format!(
                    "[lanes.attachments] types: `{bad}` is not a media type like image/png or image/*"
                ));
            }
            rules.types = types.iter().map(|t| t.to_ascii_lowercase()).collect();
        }
        if let Some(s) = self.upload_timeout_s {
            if !(s > 0.0 && s <= 3600.0) {
                return Err(format!(
                    "[lanes.attachments] upload_timeout_s = {s} must be from above 0 to 3600"
                ));
            }
            rules.upload_timeout = Duration::from_secs_f64(s);
        }
        if let Some(h) = self.history {
            rules.history = h;
        }
        if let Some(how) = self.long_prompt {
            rules.long_prompt = how;
        }
        if let Some(n) = self.long_prompt_chars {
            rules.long_prompt_chars = n;
        }
        if rules.long_prompt == LongPrompt::File
            && (rules.max_files == 0 || rules.admits("text/plain", 0).is_err())
        {
            return Err(
                "[lanes.attachments] long_prompt = \"file\" needs text/plain (or text/*) in types and max_files of at least 1".into(),
            );
        }
        Ok(rules)
    }
}

/// A client's file name as a file name of ours: its last path component, characters
/// that file systems or sites trip on replaced, no leading dot, at most 100 characters.
pub fn safe_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = last
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | ' ') {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    let trimmed = cleaned.trim().trim_start_matches('.');
    if trimmed.is_empty() {
        "attachment".to_string()
    } else {
        trimmed.to_string()
    }
}

const TYPES: &[(&str, &str)] = &[
    ("png", "image/png"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("gif", "image/gif"),
    ("webp", "image/webp"),
    ("pdf", "application/pdf"),
    ("txt", "text/plain"),
    ("md", "text/markdown"),
    ("csv", "text/csv"),
    ("json", "application/json"),
    (
        "docx",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ),
];

/// The media type a file name's extension names.
pub fn mime_of_name(name: &str) -> Option<String> {
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    TYPES
        .iter()
        .find(|(e, _)| *e == ext)
        .map(|(_, m)| m.to_string())
}

/// The extension a file of `mime` gets when its name has none.
pub fn extension(mime: &str) -> Option<&'static str> {
    TYPES.iter().find(|(_, m)| *m == mime).map(|(e, _)| *e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_their_paths_and_hidden_dots() {
        assert_eq!(safe_name("../../etc/passwd"), "passwd");
        assert_eq!(safe_name("C:\\x\\.bashrc"), "bashrc");
        assert_eq!(safe_name("ok name (1).png"), "ok name _1_.png");
        assert_eq!(safe_name("..."), "attachment");
        assert_eq!(mime_of_name("A.PDF").as_deref(), Some("application/pdf"));
        assert_eq!(extension("image/jpeg"), Some("jpg"));
    }

    #[test]
    fn overrides_replace_the_defaults_and_bad_ones_are_named() {
        let over = LaneAttachments {
            max_files: Some(2),
            types: Some(vec!["Image/*".into()]),
            history: Some(History::All),
            ..Default::default()
        };
        let rules = over.rules("deepseek").unwrap();
        assert_eq!(rules.max_files, 2);
        assert_eq!(rules.history, History::All);
        assert!(rules.admits("image/webp", 10).is_ok());
        assert!(rules.admits("application/pdf", 10).is_err());
        let bad = LaneAttachments {
            types: Some(vec!["png".into()]),
            ..Default::default()
        };
        assert!(bad.rules("glm").unwrap_err().contains("`png`"));
        assert!(Rules::for_provider("echo").admits("image/png", 1).is_err());
        let file = LaneAttachments {
            long_prompt: Some(LongPrompt::File),
            ..Default::default()
        };
        assert_eq!(file.rules("sandbox").unwrap().long_prompt, LongPrompt::File);
        assert!(file.rules("echo").unwrap_err().contains("text/plain"));
    }
}
