//! The TOML config: what it may contain, its defaults, and the checks that refuse a bad
//! one at `prq start` with a message naming the key and the line.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use prq_protocol::control::Mode;
use prq_protocol::controls::AfterReply;
use prq_protocol::provider::Provider;
use prq_protocol::worker::BrowserProfile;
use prq_protocol::worker::PresenceSpec;
use serde::Deserialize;
use toml::Spanned;

use crate::queue::{Accounts, Deadlines};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default = "default_mode")]
    pub mode: Mode,
    /// The Chromium executable for every lane; default: found on PATH.
    #[serde(default)]
    pub browser: Option<PathBuf>,
    /// Which browser the lanes run (`standard` or `lean`); a lane may choose its own.
    #[serde(default)]
    pub browser_profile: BrowserProfile,
    /// A lane idle this many seconds closes its browser until the next request (0 or
    /// unset: never); a lane may set its own.
    #[serde(default)]
    pub idle_suspend_s: Option<Spanned<f64>>,
    /// How long a lane may take from spawn to ready.
    #[serde(default = "default_start_timeout_s")]
    pub start_timeout_s: u64,
    /// How often workers heartbeat.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// A worker silent for this long is taken as hung: killed, and its lane lost.
    #[serde(default = "default_heartbeat_timeout_ms")]
    pub heartbeat_timeout_ms: u64,
    /// Deadline for each browser (CDP) call in a worker.
    #[serde(default = "default_cdp_timeout_ms")]
    pub cdp_timeout_ms: u64,
    /// What a lost lane does to the runtime: `stop` it (default) or `restart` the lane.
    #[serde(default)]
    pub on_lane_crash: OnLaneCrash,
    /// With `restart`: at most this many restarts of one lane ...
    #[serde(default = "default_restart_limit")]
    pub restart_limit: usize,
    /// ... within this many seconds; one more stops the runtime.
    #[serde(default = "default_restart_window_s")]
    pub restart_window_s: u64,
    /// How long `prq stop` lets processing requests finish before stopping them.
    #[serde(default = "default_shutdown_grace_s")]
    pub shutdown_grace_s: u64,
    /// `prq drain` and SIGTERM: how long `/readyz` fails while requests are still
    /// taken, so a load balancer's health check sees it before any is refused.
    #[serde(default = "default_drain_s")]
    pub drain_s: u64,
    /// Pending requests beyond this are refused with 429.
    #[serde(default = "default_max_pending")]
    pub max_pending: usize,
    /// How often prq asks again for a reply that broke the tool-call or answer format
    /// (`tools` / `response_format`), saying what was wrong.
    #[serde(default = "default_tool_retries")]
    pub tool_retries: u32,
    /// How often a quiet SSE stream (a client waiting in the queue, the panel's event
    /// stream) gets a keep-alive comment, so clients and proxies do not time it out.
    #[serde(default = "default_keep_alive_s")]
    pub keep_alive_s: u64,
    #[serde(default)]
    pub deadlines: DeadlinesConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub accounts: AccountsConfig,
    /// `[logs]`: rotation and format (read when the daemon starts).
    #[serde(default)]
    pub logs: crate::logs::LogsConfig,
    /// API keys: when any is set, `/v1/*` needs `Authorization: Bearer <key>`.
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    /// The key for the panel and the queue API (or `admin_key_file`).
    #[serde(default)]
    pub admin_key: Option<String>,
    #[serde(default)]
    pub admin_key_file: Option<PathBuf>,
    /// Client addresses allowed (CIDRs); empty: all.
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub lanes: Vec<LaneConfig>,
    /// `[attachments]`: how `https` images are fetched.
    #[serde(default)]
    pub attachments: crate::attachments::FetchConfig,
    #[serde(default)]
    pub panel: PanelConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PanelConfig {
    /// The panel's login view of a lane's page (`remote_login.rs`); `false` turns it off.
    #[serde(default = "default_remote_login")]
    pub remote_login: bool,
}

impl Default for PanelConfig {
    fn default() -> Self {
        Self {
            remote_login: default_remote_login(),
        }
    }
}

fn default_remote_login() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Shown in the panel and the logs instead of the key.
    pub name: String,
    #[serde(default)]
    pub key: Option<String>,
    /// A file holding the key (its surrounding whitespace is ignored).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// `[limits]`: what one request, and one client, may ask for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_body_bytes: usize,
    pub max_messages: usize,
    pub max_prompt_chars: usize,
    /// Requests one client (API key, else address) may have admitted at once; no
    /// limit when unset.
    pub max_concurrent_per_client: Option<usize>,
    /// HTTP connections open at once (read when the daemon starts); further ones wait
    /// in the kernel's listen backlog until one closes, so no client can take all of
    /// the daemon's file descriptors.
    pub max_connections: usize,
    /// Seconds a new connection has to send a complete request head: a half-open or
    /// silent connection is closed after it.
    pub header_timeout_s: f64,
    /// Seconds a kept-alive connection may wait for (and receive the head of) its next
    /// request before it is closed.
    pub keep_alive_idle_s: f64,
    /// Seconds a request's body has to arrive in full (408 after it).
    pub body_timeout_s: f64,
    /// Bytes of answer held for a client that has not read them yet; a request whose
    /// client falls this far behind is stopped and ends `client_too_slow`.
    pub client_buffer_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 * 1024 * 1024,
            max_messages: 1024,
            max_prompt_chars: 1_000_000,
            max_concurrent_per_client: None,
            max_connections: 512,
            header_timeout_s: 5.0,
            keep_alive_idle_s: 30.0,
            body_timeout_s: 30.0,
            client_buffer_bytes: 1024 * 1024,
        }
    }
}

/// `[accounts]`: how a lane whose site said rate limit cools (see [`Accounts`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccountsConfig {
    /// The first cooling, in seconds, when the site gives no time; doubling on repeats.
    pub cooldown_s: u64,
    /// The longest backoff cooling, in seconds.
    pub cooldown_max_s: u64,
    /// Requests wait while every lane of their prefix cools (else: 429 at once).
    pub wait_for_cooldown: bool,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        let a = Accounts::default();
        Self {
            cooldown_s: a.cooldown.as_secs(),
            cooldown_max_s: a.cooldown_max.as_secs(),
            wait_for_cooldown: a.wait_for_cooldown,
        }
    }
}

impl AccountsConfig {
    pub fn settings(&self) -> Accounts {
        Accounts {
            cooldown: Duration::from_secs(self.cooldown_s),
            cooldown_max: Duration::from_secs(self.cooldown_max_s),
            wait_for_cooldown: self.wait_for_cooldown,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnLaneCrash {
    /// The runtime stops; other lanes finish what they generate; `prq start` restarts.
    #[default]
    Stop,
    /// Only the lost lane is started again, with backoff, within the restart limit.
    Restart,
}

/// `[deadlines]`, in seconds (fractions allowed).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeadlinesConfig {
    /// Admitted → taken by a lane.
    pub queue_wait_s: f64,
    /// Taken by a lane → first text.
    pub first_token_s: f64,
    /// Between two pieces of text.
    pub idle_s: f64,
    /// Taken by a lane → end.
    pub total_s: f64,
}

impl Default for DeadlinesConfig {
    fn default() -> Self {
        let d = Deadlines::default();
        Self {
            queue_wait_s: d.queue_wait.as_secs_f64(),
            first_token_s: d.first_token.as_secs_f64(),
            idle_s: d.idle.as_secs_f64(),
            total_s: d.total.as_secs_f64(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaneConfig {
    pub provider: Spanned<String>,
    /// Model IDs `<prefix>-auto|-chat|-reasoner` route here; default: the provider's name.
    #[serde(default)]
    pub prefix: Option<Spanned<String>>,
    /// The browser profile name; default `default`.
    #[serde(default)]
    pub account: Option<Spanned<String>>,
    /// Overrides the provider's chat page URL.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The `-auto` models' thinking setting.
    #[serde(default)]
    pub thinking: bool,
    /// `[lanes.selectors]`: selectors overriding the driver's, by name; each a string
    /// or a list of alternatives tried in order.
    #[serde(default)]
    pub selectors: Option<Spanned<BTreeMap<String, SelectorList>>>,
    /// How the lane's browser presents itself and where it connects from: checked and
    /// defaulted in `presence.rs`.
    #[serde(default)]
    pub user_agent: Option<Spanned<String>>,
    #[serde(default)]
    pub locale: Option<Spanned<String>>,
    #[serde(default)]
    pub timezone: Option<Spanned<String>>,
    #[serde(default)]
    pub proxy: Option<Spanned<String>>,
    #[serde(default)]
    pub headless: Option<Spanned<bool>>,
    /// Keep every site stream the lane reads under `PRQ_HOME/captures/` (`prq replay`).
    #[serde(default)]
    pub capture: bool,
    /// Sandbox lanes only: the site shows a login form until someone logs in.
    #[serde(default)]
    pub login: Option<Spanned<bool>>,
    /// An idle lane loads its page again this often, in seconds (0 or unset: never).
    #[serde(default)]
    pub keep_alive_s: Option<Spanned<u64>>,
    /// This lane's browser profile; default: the top-level `browser_profile`.
    #[serde(default)]
    pub browser_profile: Option<BrowserProfile>,
    /// This lane's `idle_suspend_s` (0: never); default: the top-level one.
    #[serde(default)]
    pub idle_suspend_s: Option<Spanned<f64>>,
    /// `[lanes.models]`: site models beyond the driver's, a model ID's suffix mapped to
    /// the name to pick in the page's model picker.
    #[serde(default)]
    pub models: Option<Spanned<BTreeMap<String, String>>>,
    /// What becomes of the chat each request makes; default: keep.
    #[serde(default)]
    pub after_reply: Option<AfterReply>,
    /// `[lanes.attachments]`: this lane's attachment limits over the provider's.
    #[serde(default)]
    pub attachments: Option<Spanned<crate::attachments::LaneAttachments>>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8765))
}
fn default_mode() -> Mode {
    Mode::Concurrent
}
fn default_restart_limit() -> usize {
    3
}
fn default_restart_window_s() -> u64 {
    60
}
fn default_shutdown_grace_s() -> u64 {
    10
}
fn default_drain_s() -> u64 {
    5
}
fn default_max_pending() -> usize {
    256
}
fn default_keep_alive_s() -> u64 {
    10
}
fn default_tool_retries() -> u32 {
    1
}
fn default_start_timeout_s() -> u64 {
    60
}
fn default_heartbeat_ms() -> u64 {
    500
}
fn default_heartbeat_timeout_ms() -> u64 {
    3_000
}
fn default_cdp_timeout_ms() -> u64 {
    10_000
}

/// A lane as the runtime sees it: the config's lane with its defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lane {
    /// `<prefix>#<n>`, n counting lanes of one prefix from 1.
    pub id: String,
    pub provider: String,
    pub prefix: String,
    pub account: String,
    pub base_url: Option<String>,
    pub thinking: bool,
    pub selectors: BTreeMap<String, Vec<String>>,
    pub presence: PresenceSpec,
    pub capture: bool,
    /// A sandbox lane whose site asks for a login (`login = true`).
    pub login: bool,
    /// An idle lane loads its page again this often (`keep_alive_s`); `None`: never.
    pub keep_alive_s: Option<u64>,
    pub browser_profile: BrowserProfile,
    /// Idle this long, the lane closes its browser; `None`: never.
    pub idle_suspend: Option<Duration>,
    /// Its site models: the model ID's suffix and the name the page's picker shows (the
    /// driver's known ones, then `[lanes.models]`, which wins for a suffix in both).
    pub models: Vec<(String, String)>,
    pub after_reply: AfterReply,
    /// What the lane's site takes as attachments.
    pub attachments: crate::attachments::Rules,
}

impl Lane {
    /// What the lane's worker is told (`Configure`); `sandbox_url`: where the daemon
    /// serves the sandbox site, for sandbox lanes without a `base_url`.
    pub fn spec(
        &self,
        config: &Config,
        home: &crate::home::Home,
        sandbox_url: Option<String>,
    ) -> prq_protocol::worker::LaneSpec {
        // The sandbox tells accounts apart as a site does, by a cookie its page sets
        // for `?account=` (account names are URL-safe: the config checks them).
        let base_url = self.base_url.clone().or_else(|| {
            (self.provider == "sandbox")
                .then_some(sandbox_url)
                .flatten()
                .map(|url| crate::sandbox::login::page_url(&url, &self.account, self.login))
        });
        let mut selectors = self.selectors.clone();
        if self.login {
            // The sandbox is prq's own site: its login form is a fact of its page.
            selectors
                .entry("logged_out".into())
                .or_insert_with(|| vec![crate::sandbox::login::LOGGED_OUT.into()]);
        }
        prq_protocol::worker::LaneSpec {
            lane_id: self.id.clone(),
            provider: self.provider.clone(),
            prefix: self.prefix.clone(),
            account: self.account.clone(),
            profile_dir: home.profile_dir(&self.provider, &self.account),
            base_url,
            browser: config.browser.clone(),
            thinking_default: self.thinking,
            heartbeat_ms: config.heartbeat_ms,
            heartbeat_timeout_ms: config.heartbeat_timeout_ms,
            cdp_timeout_ms: config.cdp_timeout_ms,
            selectors,
            presence: self.presence.clone(),
            capture_dir: self.capture.then(|| home.captures_dir()),
            browser_profile: self.browser_profile,
            keep_alive_s: self.keep_alive_s,
            after_reply: self.after_reply,
            upload_timeout_ms: self.attachments.upload_timeout.as_millis() as u64,
        }
    }
}

/// The config used when none is given: two sandbox lanes, so a newcomer sees two
/// browsers generating at once.
pub const BUILTIN: &str = r#"
listen = "127.0.0.1:8765"
mode = "concurrent"

[[lanes]]
provider = "sandbox"
prefix = "sandbox"
account = "a"

[[lanes]]
provider = "sandbox"
prefix = "sandbox2"
account = "b"
"#;

impl Config {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("bad config file {}", path.display()))
    }

    pub fn builtin() -> Self {
        Self::parse(BUILTIN).expect("the built-in config is valid")
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        // toml's error names the key and shows the line; keep it whole.
        let config: Config = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        config.validate(text)?;
        Ok(config)
    }

    fn validate(&self, text: &str) -> anyhow::Result<()> {
        let line_of = |span: std::ops::Range<usize>| text[..span.start].matches('\n').count() + 1;
        if let Err(e) = self.attachments.allowed() {
            bail!("{e}");
        }
        if self.lanes.is_empty() {
            bail!("no lanes: add at least one [[lanes]] table with a provider, e.g. provider = \"sandbox\"");
        }
        // A value out of range is named with its key and its line.
        let out_of_range = |table: &str, key: &str, rule: &str| {
            let at = key_line(text, table, key).map_or(String::new(), |n| format!("line {n}: "));
            let key = if table.is_empty() {
                key.to_string()
            } else {
                format!("[{table}] {key}")
            };
            anyhow::anyhow!("{at}{key} {rule}")
        };
        for (key, v) in [
            ("heartbeat_ms", self.heartbeat_ms),
            ("start_timeout_s", self.start_timeout_s),
            ("cdp_timeout_ms", self.cdp_timeout_ms),
        ] {
            if v == 0 {
                return Err(out_of_range("", key, "must be greater than 0"));
            }
        }
        let d = &self.deadlines;
        for (key, v) in [
            ("queue_wait_s", d.queue_wait_s),
            ("first_token_s", d.first_token_s),
            ("idle_s", d.idle_s),
            ("total_s", d.total_s),
        ] {
            if !(v > 0.0 && v <= 7.0 * 24.0 * 3600.0) {
                return Err(out_of_range(
                    "deadlines",
                    key,
                    &format!("= {v} must be more than 0 and at most a week, in seconds"),
                ));
            }
        }
        if self.max_pending == 0 {
            return Err(out_of_range("", "max_pending", "must be at least 1"));
        }
        if !(1..=3600).contains(&self.keep_alive_s) {
            return Err(out_of_range(
                "",
                "keep_alive_s",
                &format!("= {} must be from 1 to 3600 seconds", self.keep_alive_s),
            ));
        }
        if self.tool_retries > 5 {
            return Err(out_of_range(
                "",
                "tool_retries",
                &format!("= {} must be from 0 to 5", self.tool_retries),
            ));
        }
        let l = &self.limits;
        for (key, v) in [
            ("max_body_bytes", l.max_body_bytes),
            ("max_messages", l.max_messages),
            ("max_prompt_chars", l.max_prompt_chars),
            (
                "max_concurrent_per_client",
                l.max_concurrent_per_client.unwrap_or(1),
            ),
            ("max_connections", l.max_connections),
            ("client_buffer_bytes", l.client_buffer_bytes),
        ] {
            if v == 0 {
                return Err(out_of_range("limits", key, "must be at least 1"));
            }
        }
        let a = &self.accounts;
        if !(1..=7 * 24 * 3600).contains(&a.cooldown_s) {
            return Err(out_of_range(
                "accounts",
                "cooldown_s",
                &format!("= {} must be from 1 s to a week", a.cooldown_s),
            ));
        }
        if !(a.cooldown_s..=7 * 24 * 3600).contains(&a.cooldown_max_s) {
            return Err(out_of_range(
                "accounts",
                "cooldown_max_s",
                &format!(
                    "= {} must be at least cooldown_s ({}) and at most a week",
                    a.cooldown_max_s, a.cooldown_s
                ),
            ));
        }
        let logs = &self.logs;
        if logs.max_bytes < crate::logs::LogsConfig::MIN_BYTES {
            return Err(out_of_range(
                "logs",
                "max_bytes",
                &format!(
                    "= {} must be at least {}",
                    logs.max_bytes,
                    crate::logs::LogsConfig::MIN_BYTES
                ),
            ));
        }
        if logs.keep > crate::logs::LogsConfig::MAX_KEEP {
            return Err(out_of_range(
                "logs",
                "keep",
                &format!(
                    "= {} must be at most {}",
                    logs.keep,
                    crate::logs::LogsConfig::MAX_KEEP
                ),
            ));
        }
        for (key, v) in [
            ("header_timeout_s", l.header_timeout_s),
            ("keep_alive_idle_s", l.keep_alive_idle_s),
            ("body_timeout_s", l.body_timeout_s),
        ] {
            if !(v > 0.0 && v <= 3600.0) {
                return Err(out_of_range(
                    "limits",
                    key,
                    &format!("= {v} must be more than 0 and at most 3600 seconds"),
                ));
            }
        }
        let mut names = HashSet::new();
        for k in &self.keys {
            if k.name.is_empty() || !names.insert(k.name.as_str()) {
                bail!(
                    "each [[keys]] needs a name of its own (got {:?} twice or empty)",
                    k.name
                );
            }
            if k.key.is_some() == k.key_file.is_some() {
                bail!("[[keys]] {:?}: give exactly one of key or key_file", k.name);
            }
        }
        if self.admin_key.is_some() && self.admin_key_file.is_some() {
            bail!("give admin_key or admin_key_file, not both");
        }
        for cidr in &self.allow {
            crate::auth::Cidr::parse(cidr).map_err(|e| anyhow::anyhow!("allow: {e}"))?;
        }
        if !self.listen.ip().is_loopback() && self.keys.is_empty() {
            bail!(
                "listen = \"{}\" is not a loopback address and no API key is set: anyone who can reach it could use your accounts. Add a [[keys]] table (name = \"...\", key = \"...\"), or listen on 127.0.0.1",
                self.listen
            );
        }
        if self.heartbeat_timeout_ms < 2 * self.heartbeat_ms {
            return Err(out_of_range(
                "",
                "heartbeat_timeout_ms",
                &format!(
                    "({}) must be at least twice heartbeat_ms ({})",
                    self.heartbeat_timeout_ms, self.heartbeat_ms
                ),
            ));
        }
        if let Some(idle) = &self.idle_suspend_s {
            check_idle_suspend(*idle.get_ref())
                .map_err(|e| anyhow::anyhow!("line {}: {e}", line_of(idle.span())))?;
        }
        let mut profiles = HashSet::new();
        for lane in &self.lanes {
            let provider = lane.provider.get_ref();
            if Provider::from_name(provider).is_none() {
                bail!(
                    "line {}: unknown provider {provider:?} in [[lanes]] (known: {})",
                    line_of(lane.provider.span()),
                    Provider::names()
                );
            }
            if let Some(prefix) = &lane.prefix {
                if !valid_name(prefix.get_ref()) {
                    bail!(
                        "line {}: prefix {:?} must be lowercase letters, digits, '_' or '-' (it starts model IDs like <prefix>-chat)",
                        line_of(prefix.span()),
                        prefix.get_ref()
                    );
                }
            }
            if let Some(account) = &lane.account {
                if !valid_name(account.get_ref()) {
                    bail!(
                        "line {}: account {:?} must be lowercase letters, digits, '_' or '-' (it names a browser profile directory)",
                        line_of(account.span()),
                        account.get_ref()
                    );
                }
            }
            if lane.capture && provider == Provider::Echo.name() {
                bail!(
                    "line {}: capture = true is for providers with a site stream; echo has none",
                    line_of(lane.provider.span())
                );
            }
            if let Some(login) = lane.login.as_ref().filter(|l| *l.get_ref()) {
                if provider != Provider::Sandbox.name() {
                    bail!(
                        "line {}: login = true is for sandbox lanes (it makes the sandbox site ask for a login); a real site asks by itself",
                        line_of(login.span())
                    );
                }
            }
            if lane.keep_alive_s.is_some() && provider == Provider::Echo.name() {
                bail!(
                    "line {}: keep_alive_s is for lanes with a page; echo has none",
                    line_of(lane.provider.span())
                );
            }
            if let Some(idle) = &lane.idle_suspend_s {
                check_idle_suspend(*idle.get_ref())
                    .map_err(|e| anyhow::anyhow!("line {}: {e}", line_of(idle.span())))?;
            }
            // The headless shell has no headed mode: a lane cannot ask for both.
            let profile = lane.browser_profile.unwrap_or(self.browser_profile);
            if let Some(headless) = lane.headless.as_ref().filter(|h| !*h.get_ref()) {
                if profile == BrowserProfile::Lean {
                    bail!(
                        "line {}: headless = false needs the full Chromium, but this lane's \
                         browser_profile is \"lean\" (the headless shell, which cannot show a \
                         window); set browser_profile = \"standard\" on this lane, or drop \
                         headless = false",
                        line_of(headless.span())
                    );
                }
            }
            if let Some(selectors) = &lane.selectors {
                check_selectors(provider, selectors.get_ref())
                    .map_err(|e| anyhow::anyhow!("line {}: {e}", line_of(selectors.span())))?;
            }
            if let Some(models) = &lane.models {
                check_models(provider, models.get_ref())
                    .map_err(|e| anyhow::anyhow!("line {}: {e}", line_of(models.span())))?;
            }
            if provider == Provider::Echo.name()
                && lane.after_reply.is_some_and(|a| a != AfterReply::Keep)
            {
                bail!("an echo lane makes no chats: after_reply is for providers with a page");
            }
            crate::presence::check(lane)
                .map_err(|(span, e)| anyhow::anyhow!("line {}: {e}", line_of(span)))?;
            if let Some(attachments) = &lane.attachments {
                attachments
                    .get_ref()
                    .rules(provider)
                    .map_err(|e| anyhow::anyhow!("line {}: {e}", line_of(attachments.span())))?;
            }
            let account = lane.account_name();
            // Two browsers cannot share a profile; echo lanes have no browser.
            if provider != Provider::Echo.name()
                && !profiles.insert((provider.clone(), account.to_string()))
            {
                let span = lane
                    .account
                    .as_ref()
                    .map_or(lane.provider.span(), |a| a.span());
                bail!(
                    "line {}: two lanes use provider {provider:?} with account {account:?}; each lane needs its own account (browser profile)",
                    line_of(span)
                );
            }
        }
        Ok(())
    }

    /// The lanes with defaults filled in and IDs assigned, in config order.
    pub fn lanes(&self) -> Vec<Lane> {
        let mut per_prefix: std::collections::HashMap<String, usize> = Default::default();
        self.lanes
            .iter()
            .map(|l| {
                let prefix = l
                    .prefix
                    .as_ref()
                    .map_or_else(|| l.provider.get_ref().clone(), |p| p.get_ref().clone());
                let n = per_prefix.entry(prefix.clone()).or_default();
                *n += 1;
                Lane {
                    id: format!("{prefix}#{n}"),
                    provider: l.provider.get_ref().clone(),
                    prefix,
                    account: l.account_name().to_string(),
                    base_url: l.base_url.clone(),
                    thinking: l.thinking,
                    selectors: l.selectors.as_ref().map_or_else(Default::default, |s| {
                        s.get_ref()
                            .iter()
                            .map(|(name, list)| (name.clone(), list.clone().into_vec()))
                            .collect()
                    }),
                    presence: crate::presence::resolve(l),
                    capture: l.capture,
                    login: l.login.as_ref().is_some_and(|l| *l.get_ref()),
                    keep_alive_s: l
                        .keep_alive_s
                        .as_ref()
                        .map(|s| *s.get_ref())
                        .filter(|&s| s > 0),
                    browser_profile: l.browser_profile.unwrap_or(self.browser_profile),
                    idle_suspend: l
                        .idle_suspend_s
                        .as_ref()
                        .or(self.idle_suspend_s.as_ref())
                        .map(|s| *s.get_ref())
                        .filter(|&s| s > 0.0)
                        .map(Duration::from_secs_f64),
                    models: lane_models(l),
                    after_reply: l.after_reply.unwrap_or_default(),
                    // `validate` refused overrides that do not make rules.
                    attachments: l
                        .attachments
                        .as_ref()
                        .and_then(|a| a.get_ref().rules(l.provider.get_ref()).ok())
                        .unwrap_or_else(|| {
                            crate::attachments::Rules::for_provider(l.provider.get_ref())
                        }),
                }
            })
            .collect()
    }

    pub fn start_timeout(&self) -> Duration {
        Duration::from_secs(self.start_timeout_s)
    }

    pub fn deadlines(&self) -> Deadlines {
        let d = &self.deadlines;
        Deadlines {
            queue_wait: Duration::from_secs_f64(d.queue_wait_s),
            first_token: Duration::from_secs_f64(d.first_token_s),
            idle: Duration::from_secs_f64(d.idle_s),
            total: Duration::from_secs_f64(d.total_s),
        }
    }
}

impl LaneConfig {
    fn account_name(&self) -> &str {
        self.account.as_ref().map_or("default", |a| a.get_ref())
    }
}

/// `idle_suspend_s`: 0 (never) or a time a browser can close and start again in.
fn check_idle_suspend(s: f64) -> Result<(), String> {
    if s == 0.0 || (1.0..=30.0 * 24.0 * 3600.0).contains(&s) {
        Ok(())
    } else {
        Err(format!(
            "idle_suspend_s = {s} must be 0 (never sleep) or from 1 second to 30 days"
        ))
    }
}

/// `[lanes.selectors]`: only names the drivers know, only non-empty selectors, and
/// only for providers with a page.
/// A `[lanes.selectors]` value: one selector, or alternatives tried in order.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SelectorList {
    One(String),
    Many(Vec<String>),
}

impl SelectorList {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            SelectorList::One(one) => vec![one],
            SelectorList::Many(many) => many,
        }
    }
}

/// `[lanes.models]`: each key a model ID's suffix, each value a name to pick.
fn check_models(provider: &str, models: &BTreeMap<String, String>) -> Result<(), String> {
    if provider == Provider::Echo.name() && !models.is_empty() {
        return Err("[lanes.models] is for providers with a model picker; echo has none".into());
    }
    for (id, pick) in models {
        crate::controls::models::check_id(id).map_err(|e| format!("[lanes.models] {e}"))?;
        if pick.trim().is_empty() {
            return Err(format!(
                "[lanes.models] {id} is empty; give the model's name as the page's picker shows it"
            ));
        }
    }
    Ok(())
}

/// A lane's site models: the driver's, then the config's.
fn lane_models(lane: &LaneConfig) -> Vec<(String, String)> {
    let known = Provider::from_name(lane.provider.get_ref())
        .map_or(&[][..], crate::controls::models::known);
    let mut models: Vec<(String, String)> = known
        .iter()
        .map(|m| (m.id.to_owned(), m.pick.to_owned()))
        .collect();
    for (id, pick) in lane.models.iter().flat_map(|m| m.get_ref()) {
        match models.iter_mut().find(|(known, _)| known == id) {
            Some(entry) => entry.1 = pick.trim().to_owned(),
            None => models.push((id.clone(), pick.trim().to_owned())),
        }
    }
    models
}

fn check_selectors(
    provider: &str,
    selectors: &BTreeMap<String, SelectorList>,
) -> Result<(), String> {
    use prq_protocol::worker::SELECTOR_NAMES;
    if provider == Provider::Echo.name() && !selectors.is_empty() {
        return Err("[lanes.selectors] is for providers with a page; echo has none".into());
    }
    for (name, selector) in selectors {
        if !SELECTOR_NAMES.contains(&name.as_str()) {
            return Err(format!(
                "unknown selector name {name:?} in [lanes.selectors] (known: {})",
                SELECTOR_NAMES.join(", ")
            ));
        }
        let list = selector.clone().into_vec();
        if list.is_empty() {
            return Err(format!(
                "[lanes.selectors] {name} is an empty list; give at least one selector"
            ));
        }
        for one in &list {
            if one.trim().is_empty() {
                return Err(format!(
                    "[lanes.selectors] {name} is empty; give a selector (CSS, text=..., role=...)"
                ));
            }
            prq_protocol::selector::Locator::parse(one)
                .map_err(|e| format!("[lanes.selectors] {name}: {e}"))?;
        }
    }
    Ok(())
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// The line of `key = ...` in `table` (`""`: the top level), if the file sets it.
fn key_line(text: &str, table: &str, key: &str) -> Option<usize> {
    let mut current = "";
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[') {
            current = header
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim();
            continue;
        }
        if current == table {
            if let Some(rest) = line.strip_prefix(key) {
                if rest.trim_start().starts_with('=') {
                    return Some(n + 1);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        format!("{:#}", Config::parse(text).unwrap_err())
    }

    #[test]
    fn builtin_config_has_two_sandbox_lanes() {
        let c = Config::builtin();
        let lanes = c.lanes();
        assert_eq!(lanes.len(), 2);
        assert_eq!(lanes[0].id, "sandbox#1");
        assert_eq!(lanes[1].prefix, "sandbox2");
        assert_eq!(c.mode, Mode::Concurrent);
    }

    #[test]
    fn defaults_fill_prefix_account_and_ids() {
        let c = Config::parse(
            "[[lanes]]\nprovider = \"echo\"\n[[lanes]]\nprovider = \"echo\"\naccount = \"b\"\n",
        )
        .unwrap();
        let lanes = c.lanes();
        assert_eq!(lanes[0].prefix, "echo");
        assert_eq!(lanes[0].account, "default");
        assert_eq!(lanes[0].id, "echo#1");
        assert_eq!(lanes[1].id, "echo#2");
        assert_eq!(c.listen, default_listen());
    }

    #[test]
    fn a_lane_runs_the_top_level_browser_profile_unless_it_names_its_own() {
        let c = Config::parse(
            "browser_profile = \"lean\"\n[[lanes]]\nprovider = \"sandbox\"\n\
             [[lanes]]\nprovider = \"sandbox\"\naccount = \"b\"\nbrowser_profile = \"standard\"\n",
        )
        .unwrap();
        let lanes = c.lanes();
        assert_eq!(lanes[0].browser_profile, BrowserProfile::Lean);
        assert_eq!(lanes[1].browser_profile, BrowserProfile::Standard);
        let default = Config::builtin();
        assert_eq!(default.lanes()[0].browser_profile, BrowserProfile::Standard);
        let e = err("browser_profile = \"tiny\"\n[[lanes]]\nprovider = \"echo\"\n");
        assert!(
            e.contains("tiny") && e.contains("lean") && e.contains("line 1"),
            "{e}"
        );
    }

    #[test]
    fn a_lean_lane_cannot_be_headed() {
        let e = err(
            "browser_profile = \"lean\"\n[[lanes]]\nprovider = \"sandbox\"\nheadless = false\n",
        );
        assert!(
            e.contains("line 4")
                && e.contains("headless = false")
                && e.contains("browser_profile = \"standard\""),
            "{e}"
        );
        let e = err(
            "[[lanes]]\nprovider = \"sandbox\"\nheadless = false\nbrowser_profile = \"lean\"\n",
        );
        assert!(e.contains("line 3") && e.contains("lean"), "{e}");
        // A headed lane beside lean ones is fine.
        let c = Config::parse(
            "browser_profile = \"lean\"\n[[lanes]]\nprovider = \"sandbox\"\nheadless = false\n\
             browser_profile = \"standard\"\n",
        )
        .unwrap();
        assert_eq!(c.lanes()[0].browser_profile, BrowserProfile::Standard);
    }

    #[test]
    fn idle_suspend_is_off_by_default_set_at_the_top_and_overridden_per_lane() {
        let lanes = |text: &str| Config::parse(text).unwrap().lanes();
        let two = "[[lanes]]\nprovider = \"sandbox\"\n[[lanes]]\nprovider = \"sandbox\"\naccount = \"b\"\n";
        assert!(lanes(two).iter().all(|l| l.idle_suspend.is_none()));
        let top = format!("idle_suspend_s = 300\n{two}");
        assert!(lanes(&top)
            .iter()
            .all(|l| l.idle_suspend == Some(Duration::from_secs(300))));
        let off = format!("{top}idle_suspend_s = 0\n");
        let l = lanes(&off);
        assert_eq!(l[0].idle_suspend, Some(Duration::from_secs(300)));
        assert_eq!(l[1].idle_suspend, None, "0 turns it off for the lane");
        let e = err(&format!("{two}idle_suspend_s = 0.2\n"));
        assert!(e.contains("idle_suspend_s") && e.contains("line 6"), "{e}");
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let e = err("listen = \"127.0.0.1:0\"\n[[lanes]]\nprovider = \"echo\"\ncolour = \"red\"\n");
        assert!(e.contains("colour") && e.contains("line 4"), "{e}");
    }

    #[test]
    fn a_bad_mode_is_named_with_its_line() {
        let e = err("mode = \"parallel\"\n[[lanes]]\nprovider = \"echo\"\n");
        assert!(e.contains("parallel") && e.contains("line 1"), "{e}");
    }

    #[test]
    fn a_bad_listen_address_is_refused() {
        let e = err("listen = \"localhost\"\n[[lanes]]\nprovider = \"echo\"\n");
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn an_unknown_provider_is_named_with_its_line() {
        let e = err("[[lanes]]\nprovider = \"bing\"\n");
        assert!(
            e.contains("bing") && e.contains("line 2") && e.contains("sandbox"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_prefix_is_named_with_its_line() {
        let e = err("[[lanes]]\nprovider = \"echo\"\nprefix = \"Bad Prefix\"\n");
        assert!(e.contains("Bad Prefix") && e.contains("line 3"), "{e}");
    }

    #[test]
    fn two_lanes_on_one_profile_are_refused() {
        let e = err("[[lanes]]\nprovider = \"sandbox\"\n[[lanes]]\nprovider = \"sandbox\"\nprefix = \"b\"\n");
        assert!(e.contains("account") && e.contains("line 4"), "{e}");
    }

    #[test]
    fn selectors_override_by_known_names_only() {
        let c = Config::parse(
            "[[lanes]]\nprovider = \"deepseek\"\n[lanes.selectors]\nprompt = \"textarea.new\"\n",
        )
        .unwrap();
        let lanes = c.lanes();
        assert_eq!(lanes[0].selectors["prompt"], ["textarea.new"]);
        assert!(c.lanes.iter().all(|l| l.selectors.is_some()));

        let e = err("[[lanes]]\nprovider = \"glm\"\n[lanes.selectors]\nprompt_box = \"x\"\n");
        assert!(
            e.contains("prompt_box") && e.contains("line 3") && e.contains("thinking_toggle"),
            "{e}"
        );
        let e = err("[[lanes]]\nprovider = \"glm\"\n[lanes.selectors]\nsend = \" \"\n");
        assert!(e.contains("send is empty"), "{e}");
        let e = err("[[lanes]]\nprovider = \"echo\"\n[lanes.selectors]\nsend = \"b\"\n");
        assert!(e.contains("echo has none"), "{e}");
    }

    #[test]
    fn a_selector_is_a_string_or_a_list_in_the_selector_syntax() {
        let c = Config::parse(
            "[[lanes]]\nprovider = \"deepseek\"\n[lanes.selectors]\nsend = [\"button.send\", \"role=button[name=\\\"Send message\\\"]\"]\nthinking_toggle = \"text=DeepThink\"\nthinking_on = \".on:has-text(DeepThink)\"\n",
        )
        .unwrap();
        let lanes = c.lanes();
        assert_eq!(
            lanes[0].selectors["send"],
            ["button.send", "role=button[name=\"Send message\"]"]
        );
        assert_eq!(lanes[0].selectors["thinking_toggle"], ["text=DeepThink"]);

        let e = err("[[lanes]]\nprovider = \"glm\"\n[lanes.selectors]\nsend = []\n");
        assert!(e.contains("send is an empty list"), "{e}");
        let e = err(
            "[[lanes]]\nprovider = \"glm\"\n[lanes.selectors]\nsend = [\"b\", \"role=Button\"]\n",
        );
        assert!(
            e.contains("line 3") && e.contains("send") && e.contains("lowercase"),
            "{e}"
        );
        let e = err("[[lanes]]\nprovider = \"glm\"\n[lanes.selectors]\nsend = 3\n");
        assert!(e.contains("send") || e.contains("selectors"), "{e}");
    }

    #[test]
    fn capture_is_off_unless_asked_and_only_for_a_site() {
        let c = Config::parse(
            "[[lanes]]\nprovider = \"glm\"\ncapture = true\n[[lanes]]\nprovider = \"qwen\"\n",
        )
        .unwrap();
        let capture: Vec<bool> = c.lanes().iter().map(|l| l.capture).collect();
        assert_eq!(capture, [true, false]);
        let e = err("[[lanes]]\nprovider = \"echo\"\ncapture = true\n");
        assert!(e.contains("line 2") && e.contains("echo has none"), "{e}");
    }

    #[test]
    fn a_value_out_of_range_is_named_with_its_line() {
        let lanes = "[[lanes]]\nprovider = \"echo\"\n";
        let e = err(&format!("mode = \"serial\"\nmax_pending = 0\n{lanes}"));
        assert!(e.contains("line 2: max_pending"), "{e}");
        let e = err(&format!("{lanes}[deadlines]\nidle_s = -1\n"));
        assert!(e.contains("line 4: [deadlines] idle_s"), "{e}");
        let e = err(&format!("keep_alive_s = 0\n{lanes}"));
        assert!(e.contains("line 1: keep_alive_s"), "{e}");
        let e = err(&format!("{lanes}[limits]\nmax_messages_x = 1\n"));
        assert!(e.contains("max_messages_x"), "{e}");
        let e = err(&format!("{lanes}[limits]\nmax_messages = 0\n"));
        assert!(e.contains("line 4: [limits] max_messages must"), "{e}");
        let e = err(&format!("{lanes}[accounts]\ncooldown_s = 0\n"));
        assert!(e.contains("line 4: [accounts] cooldown_s"), "{e}");
        let e = err(&format!(
            "{lanes}[accounts]\ncooldown_s = 60\ncooldown_max_s = 30\n"
        ));
        assert!(e.contains("line 5: [accounts] cooldown_max_s"), "{e}");
        let c = Config::parse(&format!(
            "{lanes}[accounts]\ncooldown_s = 5\nwait_for_cooldown = false\n"
        ))
        .unwrap();
        let a = c.accounts.settings();
        assert_eq!(
            (
                a.cooldown.as_secs(),
                a.cooldown_max.as_secs(),
                a.wait_for_cooldown
            ),
            (5, 3600, false)
        );
    }

    #[test]
    fn no_lanes_is_refused_with_the_fix() {
        assert!(err("mode = \"serial\"\n").contains("[[lanes]]"));
    }
}
