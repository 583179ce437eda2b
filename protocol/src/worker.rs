//! Supervisor ↔ worker messages. One worker process drives one lane.
//!
//! After the handshake the supervisor sends [`ToWorker::Configure`] with everything the
//! lane needs; the worker launches its browser and answers [`FromWorker::Ready`]. From
//! then on the supervisor sends at most one [`ToWorker::Generate`] at a time and the
//! worker answers with deltas and exactly one `Finished` or `Failed` for it. An idle
//! lane may be put to sleep (`Sleep` → `Asleep`: the browser closed, the worker kept)
//! and woken (`Wake` → `Ready` again).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The supervisor's ID for one admitted request; unique for the daemon's lifetime.
pub type RequestId = u64;

/// How long a worker takes at most, from [`ToWorker::Stop`], to end the generation
/// (`Finished` with [`FinishReason::Stopped`], or how it had ended). A page busy with a
/// fast stream can hold the stop's page script up for seconds; past this the worker
/// ends the generation anyway (the stop has been sent to the page, and the next
/// request's start supersedes whatever the page still does).
pub const STOP_DEADLINE: Duration = Duration::from_secs(3);

/// How long the supervisor waits, from `Stop`, for the worker to end the generation
/// before it gives the lane up as broken: the worker's [`STOP_DEADLINE`] and room for
/// the answer to reach the supervisor on a loaded machine.
pub const STOP_GRACE: Duration = Duration::from_secs(STOP_DEADLINE.as_secs() + 2);

/// What the worker needs to run its lane. Sent once, right after the handshake.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaneSpec {
    pub lane_id: String,
    pub provider: String,
    pub prefix: String,
    pub account: String,
    /// The browser profile (`--user-data-dir`) for this (provider, account).
    pub profile_dir: PathBuf,
    /// Where the provider's chat page is (the sandbox's own URL for `sandbox` lanes).
    pub base_url: Option<String>,
    /// The Chromium executable; `None` means: look for one on PATH.
    pub browser: Option<PathBuf>,
    /// The lane's thinking setting, used by `-auto` models.
    pub thinking_default: bool,
    /// How often the worker must send a heartbeat.
    pub heartbeat_ms: u64,
    /// How long the supervisor waits for a heartbeat before it takes the worker as
    /// hung; the worker holds its browser to the same deadline (see
    /// `FailureKind::BrowserUnresponsive`).
    pub heartbeat_timeout_ms: u64,
    /// Deadline for each browser (CDP) call.
    pub cdp_timeout_ms: u64,
    /// Selectors that override the driver's defaults, by name (one of
    /// [`SELECTOR_NAMES`]): `[lanes.selectors]` in the config. Each is a list of
    /// alternatives tried in order, in the syntax of [`crate::selector`].
    pub selectors: BTreeMap<String, Vec<String>>,
    /// How the lane's browser presents itself to the site.
    pub presence: PresenceSpec,
    /// Where to keep a capture of every site stream the lane reads (`capture = true`:
    /// `PRQ_HOME/captures`); `None`: no captures.
    pub capture_dir: Option<PathBuf>,
    /// Which browser the lane runs, and so how much memory it costs.
    pub browser_profile: BrowserProfile,
    /// An idle lane loads its page again this often (`keep_alive_s`), so that a site
    /// whose session ends without activity keeps it; `None`: never.
    pub keep_alive_s: Option<u64>,
    /// What becomes of the chat each request makes (`after_reply`).
    pub after_reply: crate::controls::AfterReply,
    /// How long the page gets to show every attachment of a request as uploaded.
    pub upload_timeout_ms: u64,
}

/// Which browser a lane runs: `browser_profile` in the config. BENCHMARKS.md ("A
/// smaller browser") has what each costs in memory and start-up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BrowserProfile {
    /// The full Chromium in its new headless mode, with the switches that save memory
    /// without changing what a page sees.
    #[default]
    Standard,
    /// The full Chromium as `standard`, with its network service in the browser
    /// process: less memory, for the cost `worker/src/footprint.rs` names (a stop the
    /// site may now and then see seconds late).
    Compact,
    /// Chromium's headless shell (Debian's `chromium-headless-shell`): the smallest and
    /// fastest to start, but a browser that a site's bot check can tell from a person's.
    Lean,
}

impl BrowserProfile {
    pub fn as_str(self) -> &'static str {
        match self {
            BrowserProfile::Standard => "standard",
            BrowserProfile::Compact => "compact",
            BrowserProfile::Lean => "lean",
        }
    }
}

/// A lane's browser identity and network path (`[[lanes]]` user_agent, locale,
/// timezone, proxy, headless), with the system defaults already filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceSpec {
    /// `None`: the ordinary desktop user agent of the browser's own version.
    pub user_agent: Option<String>,
    /// A BCP 47 language tag (`en-US`): the page's languages and `Accept-Language`.
    pub locale: String,
    /// An IANA time zone name (`Europe/Berlin`).
    pub timezone: String,
    /// `http://[user:password@]host:port` or `socks5://host:port`.
    pub proxy: Option<String>,
    /// `false`: a headed browser on a virtual display of the worker's own.
    pub headless: bool,
}

impl Default for PresenceSpec {
    fn default() -> Self {
        Self {
            user_agent: None,
            locale: "en-US".into(),
            timezone: "UTC".into(),
            proxy: None,
            headless: true,
        }
    }
}

/// The page elements a browser driver finds by selector, by the names that
/// `[lanes.selectors]` overrides them with. Both ends check names against this list.
pub const SELECTOR_NAMES: &[&str] = &[
    // The box the prompt is typed into (a textarea or a contenteditable element).
    "prompt",
    // The button that sends the prompt.
    "send",
    // The button that stops a generation (shown while the site streams).
    "stop",
    // The control that switches thinking (deep think, reasoning) on and off.
    "thinking_toggle",
    // Matches only while thinking is switched on.
    "thinking_on",
    // Matches only when the account is not logged in (a login button or form).
    "logged_out",
    // The site's file input (`input[type=file]`) that attachments are set on.
    "attach_input",
    // The button that opens the file chooser, for a site whose file input only appears
    // (or only takes files) after it is clicked.
    "attach_button",
    // One per attachment the page shows as uploaded (the "uploaded" marker).
    "attach_done",
    // The site's own error about an attachment (too big, wrong type): its text is what
    // the client hears.
    "attach_error",
    // The page's own controls (`worker/src/driver/controls.rs`):
    // the model picker: what opens it, what shows the model picked, its options;
    "model_menu",
    "model_current",
    "model_option",
    // the web search switch, and what matches only while it is on;
    "search_toggle",
    "search_on",
    // the settings' fields;
    "temperature",
    "top_p",
    "max_output_tokens",
    // what deletes the chat the page shows (clicked in order: a menu, its item, a
    // confirmation), the first of them leaving the page once the chat is gone;
    "delete_chat",
    "delete_item",
    "delete_confirm",
    // the temporary-chat switch, and what matches only while it is on.
    "temporary_toggle",
    "temporary_on",
];

/// Chat roles as clients send them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

/// Whether the site should think before it answers, from the model ID's suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Thinking {
    /// `-auto`: the lane's own setting.
    Auto,
    /// `-chat`
    Off,
    /// `-reasoner`
    On,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generate {
    pub id: RequestId,
    pub thinking: Thinking,
    pub messages: Vec<ChatMessage>,
    /// The page's own controls this request sets.
    pub controls: crate::controls::PageControls,
    /// Files to attach in the page before the prompt is sent, in order. They cross as
    /// paths in the request's private directory, which the supervisor created and
    /// removes when the request ends; never as frame payloads.
    pub attachments: Vec<Attachment>,
}

/// One file for the page's upload control.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// Where the bytes are; its file name is the one the site sees.
    pub path: PathBuf,
    /// The media type (`image/png`).
    pub mime: String,
    pub bytes: u64,
}

// `Configure` is far the largest, and is sent once per worker; a `ToWorker` lives only
// between a frame and its handling, so boxing it would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToWorker {
    Configure(LaneSpec),
    Generate(Generate),
    /// Stop the generation of this request in the page; the worker answers `Finished`
    /// with [`FinishReason::Stopped`] (or `Finished`/`Failed` if it had already ended).
    Stop {
        id: RequestId,
    },
    /// Close the browser and exit 0.
    Shutdown,
    /// `prq doctor`: open the lane's page in a second tab (a generation in the first
    /// goes on), report what it shows, save its outline and a screenshot under `dir`,
    /// and close the tab; with `type_check`, also type a probe text into the prompt box,
    /// read back what it holds, and clear it. Nothing is sent to the site. Answered
    /// with `Doctor`.
    Doctor {
        dir: PathBuf,
        type_check: bool,
    },
    /// The lane has been idle long enough: close the browser (the profile stays on
    /// disk) and keep the worker; the worker answers [`FromWorker::Asleep`].
    Sleep,
    /// Start the browser and load the page again after a `Sleep`; the worker answers
    /// `Ready` (or `Fatal` when the browser cannot start).
    Wake,
    /// The panel's login view of the lane's page (`crate::screen`). The supervisor
    /// opens one only on an idle lane and sends it no request until the worker says
    /// `Ready` after the view's `Close`.
    Screen(crate::screen::ScreenCmd),
}

/// What `prq doctor` found on a lane's page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageReport {
    /// Where the page ended up (a login redirect shows here) and its title.
    pub url: String,
    pub title: String,
    /// `None`: the lane has no login selector, or the page showed neither state.
    pub logged_in: Option<bool>,
    /// The thinking switch's state; `None` without one, or when it is not found.
    pub thinking: Option<bool>,
    /// Each of the driver's selectors, in the order of [`SELECTOR_NAMES`].
    pub selectors: Vec<SelectorFound>,
    /// The page's element tree and a screenshot, when they could be saved.
    pub outline: Option<PathBuf>,
    pub screenshot: Option<PathBuf>,
    /// What could not be checked, and why.
    pub problems: Vec<String>,
    /// The browser release the check ran in.
    pub release: Option<BrowserRelease>,
    /// With `--type-check`: what the prompt box held after the probe text was typed.
    pub typing: Option<TypeCheck>,
}

/// The browser release a lane runs, and the change of major version its profile last
/// went through (a browser upgraded under a profile a site knows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrowserRelease {
    /// As the browser reports it: `156.0.8078.129`.
    pub version: String,
    /// The version the profile ran with before its last change of major version, and
    /// when (unix seconds) the lane first ran the new one; `None`: no change seen.
    pub updated_from: Option<(String, u64)>,
}

/// `prq doctor --type-check`: a probe text typed into the live page's prompt box, and
/// what the box then held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeCheck {
    /// The box held the probe exactly.
    pub exact: bool,
    /// Where it differs (`exact` alone when it does not), or why it could not be typed.
    pub detail: String,
}

/// How many elements one selector finds on the page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelectorFound {
    pub name: String,
    /// The alternative that matched, or (none matching) the first.
    pub selector: String,
    /// Every alternative, in the order tried.
    pub alternatives: Vec<String>,
    /// Elements the matching alternative finds; 0 when none does.
    pub found: u32,
}

/// Which part of the answer a piece of text belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeltaKind {
    Reasoning,
    Answer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FinishReason {
    /// The site finished its answer.
    Completed,
    /// Stopped in the page because the supervisor asked.
    Stopped,
}

/// The ways a generation fails, as the worker can tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureKind {
    /// The site showed or streamed an error.
    SiteError,
    NotLoggedIn,
    RateLimited,
    ContentFiltered,
    /// A selector or the stream was not found within its deadline.
    SiteChanged,
    /// The tab's renderer crashed; the worker reloads it.
    TabCrashed,
    /// The browser stopped answering CDP calls.
    BrowserUnresponsive,
    Internal,
    /// The site wants a person to solve a captcha before it answers.
    Captcha,
    /// The page's model picker does not offer the model asked for; the message names
    /// the models it does offer.
    ModelUnavailable,
    /// The site refused an attachment (too big, a type it does not take); the message
    /// carries the site's words.
    UploadRejected,
}

impl FailureKind {
    /// The kind's name in OpenAI error objects and in `prq replay`.
    pub fn code(self) -> &'static str {
        match self {
            FailureKind::SiteError => "site_error",
            FailureKind::NotLoggedIn => "not_logged_in",
            FailureKind::RateLimited => "rate_limited",
            FailureKind::ContentFiltered => "content_filtered",
            FailureKind::SiteChanged => "site_changed",
            FailureKind::TabCrashed => "tab_crashed",
            FailureKind::BrowserUnresponsive => "browser_unresponsive",
            FailureKind::Internal => "internal_error",
            FailureKind::Captcha => "captcha_required",
            FailureKind::ModelUnavailable => "model_unavailable",
            FailureKind::UploadRejected => "upload_rejected",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
    /// How long the site asked to wait before the next request (a rate limit's
    /// `Retry-After`, or the time its message names), in seconds.
    pub retry_after_s: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FromWorker {
    /// The browser is up and the chat page loaded; the lane takes requests.
    /// `logged_in` is what the page showed: `None` when the lane has no login (echo,
    /// sandbox) or the page showed neither state.
    Ready {
        browser_pid: Option<u32>,
        logged_in: Option<bool>,
        /// The user agent the lane's browser sends (`None` without a browser).
        user_agent: Option<String>,
        /// Which browser release runs (`None` without a browser).
        release: Option<BrowserRelease>,
    },
    Heartbeat,
    Delta {
        id: RequestId,
        kind: DeltaKind,
        text: String,
    },
    Finished {
        id: RequestId,
        reason: FinishReason,
    },
    Failed {
        id: RequestId,
        failure: Failure,
    },
    /// The browser is closed after a `Sleep`; the worker waits for `Wake`.
    Asleep,
    /// Sent before the end of a request that left the page busy (it did not answer a
    /// check after a stop or a failure): the lane takes no request until its page
    /// answers again, and then says `Ready`. A page that does not come back is `Fatal`.
    Recovering,
    /// The lane cannot go on (its browser died or failed to start); the worker exits
    /// non-zero right after sending this.
    Fatal {
        reason: String,
    },
    /// The answer to [`ToWorker::Doctor`].
    Doctor {
        report: Result<PageReport, String>,
    },
    /// A keep-alive reload (`keep_alive_s`) found the page's login changed: what it
    /// shows now. Only sent while the lane is idle.
    LoginChanged {
        logged_in: Option<bool>,
    },
    /// What the open login view shows (`crate::screen`).
    Screen(crate::screen::ScreenEvent),
    /// With `after_reply = "delete"`: the chat request `id` made was deleted, or the
    /// delete failed (the worker logs why; the request's client is not told). Sent
    /// before the request's end.
    ChatDeleted {
        id: RequestId,
        deleted: bool,
    },
}
