//! The panel's login view of this lane's tab (`prq_protocol::screen`): the tab streamed
//! as JPEG frames with `Page.startScreencast`, and a person's mouse, wheel, keys and
//! text dispatched back with `Input.*`; an address bar held to the lane's site, back
//! and reload. One task per open view owns the frame stream, so that a frame is always
//! acknowledged (Chromium sends the next only after the ack) whatever the lane loop
//! does meanwhile.

use std::time::Duration;

use base64::Engine as _;
use chromiumoxide::cdp::browser_protocol::emulation::SetFocusEmulationEnabledParams;
use chromiumoxide::cdp::browser_protocol::input::{
    DispatchKeyEventParams, DispatchKeyEventType, DispatchMouseEventParams, DispatchMouseEventType,
    InsertTextParams, MouseButton as CdpButton,
};
use chromiumoxide::cdp::browser_protocol::page::{
    BringToFrontParams, EventScreencastFrame, GetNavigationHistoryParams, NavigateParams,
    NavigateToHistoryEntryParams, ReloadParams, ScreencastFrameAckParams, StartScreencastFormat,
    StartScreencastParams, StopScreencastParams,
};
use chromiumoxide::listeners::EventStream;
use futures::StreamExt;
use prq_protocol::screen::{
    KeyKind, MouseButton, MouseKind, ScreenCmd, ScreenEvent, ScreenInput, MAX_FPS, MAX_SIDE,
};
use prq_protocol::worker::FromWorker;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};

use crate::link::Outbox;
use crate::tab::{Caller, PageError, Tab};

/// JPEG quality: text stays legible at a tenth of PNG's size.
const QUALITY: i64 = 70;

/// Commands queued for the view's task; a person does not type faster than this.
const COMMANDS: usize = 256;

/// An open view: its task, and the way to its commands.
pub struct Screencast {
    cmds: mpsc::Sender<ScreenCmd>,
    task: JoinHandle<()>,
}

impl Screencast {
    /// Starts streaming `tab` to `out`, each frame scaled to fit `max_width` ×
    /// `max_height`; `site` is the lane's page, whose site the address bar is held to.
    pub async fn open(
        tab: &Tab,
        site: &str,
        max_width: u32,
        max_height: u32,
        out: Outbox,
    ) -> Result<Self, PageError> {
        let frames = tab.listen::<EventScreencastFrame>().await?;
        let caller = tab.caller();
        let start = StartScreencastParams::builder()
            .format(StartScreencastFormat::Jpeg)
            .quality(QUALITY)
            .max_width(i64::from(max_width.clamp(1, MAX_SIDE)))
            .max_height(i64::from(max_height.clamp(1, MAX_SIDE)))
            .build();
        // The page a person looks at has the focus, as a window in front does: its
        // autofocus and caret work, and typed text goes where the page put the focus.
        caller.call(BringToFrontParams::default()).await?;
        caller
            .call(SetFocusEmulationEnabledParams::new(true))
            .await?;
        caller.call(start).await?;
        let (cmds, rx) = mpsc::channel(COMMANDS);
        let view = View {
            caller,
            site: site.to_owned(),
            out,
        };
        let task = tokio::spawn(view.run(frames, rx));
        Ok(Self { cmds, task })
    }

    /// Hands a command to the view's task.
    pub async fn send(&self, cmd: ScreenCmd) {
        // The task ends only on Close or with the tab; then there is nothing to do.
        let _ = self.cmds.send(cmd).await;
    }

    /// Stops the stream and waits (bounded by the tab's deadline) for the task to end.
    pub async fn close(mut self) {
        let _ = self.cmds.send(ScreenCmd::Close).await;
        if let Err(e) = (&mut self.task).await {
            tracing::warn!("the login view's task failed: {e}");
        }
    }
}

impl Drop for Screencast {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct View {
    caller: Caller,
    site: String,
    out: Outbox,
}

impl View {
    async fn run(
        self,
        mut frames: EventStream<EventScreencastFrame>,
        mut cmds: mpsc::Receiver<ScreenCmd>,
    ) {
        let min_gap = Duration::from_millis(1000 / u64::from(MAX_FPS));
        // The frame shown and not yet acknowledged: Chromium sends the next one only
        // after the ack, so holding it until `min_gap` has passed caps the rate.
        let mut unacked: Option<(i64, Instant)> = None;
        loop {
            let ack_due = async {
                match unacked {
                    Some((_, at)) => sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = ack_due => {
                    let (session, _) = unacked.take().expect("an ack is due");
                    if let Err(e) = self.caller.call(ScreencastFrameAckParams::new(session)).await {
                        tracing::warn!("login view: acknowledging a frame: {e}");
                    }
                }
                frame = frames.next() => {
                    let Some(frame) = frame else {
                        tracing::warn!("login view: the tab's frames ended");
                        return;
                    };
                    unacked = Some((frame.session_id, Instant::now() + min_gap));
                    self.show(&frame).await;
                }
                cmd = cmds.recv() => match cmd {
                    None | Some(ScreenCmd::Close) => break,
                    Some(cmd) => {
                        if let Err(message) = self.apply(cmd).await {
                            self.out.send(FromWorker::Screen(ScreenEvent::Refused { message })).await;
                        }
                    }
                },
            }
        }
        if let Err(e) = self.caller.call(StopScreencastParams::default()).await {
            tracing::warn!("login view: stopping the screencast: {e}");
        }
        if let Err(e) = self
            .caller
            .call(SetFocusEmulationEnabledParams::new(false))
            .await
        {
            tracing::warn!("login view: ending the focus emulation: {e}");
        }
    }

    async fn show(&self, frame: &EventScreencastFrame) {
        let data: &str = frame.data.as_ref();
        let jpeg = match base64::engine::general_purpose::STANDARD.decode(data) {
            Ok(jpeg) => jpeg,
            Err(e) => {
                tracing::warn!("login view: a frame that is not base64: {e}");
                return;
            }
        };
        let url = self.url().await.unwrap_or_default();
        let shown = ScreenEvent::Frame {
            jpeg,
            page_width: frame.metadata.device_width,
            page_height: frame.metadata.device_height,
            url,
        };
        self.out.send(FromWorker::Screen(shown)).await;
    }

    /// The tab's current URL, from its history (the browser's, so a busy page does
    /// not hold it up).
    async fn url(&self) -> Result<String, PageError> {
        let history = self
            .caller
            .call(GetNavigationHistoryParams::default())
            .await?;
        let current = usize::try_from(history.current_index).ok();
        Ok(current
            .and_then(|i| history.entries.get(i))
            .map(|e| e.url.clone())
            .unwrap_or_default())
    }

    async fn apply(&self, cmd: ScreenCmd) -> Result<(), String> {
        let done = match cmd {
            ScreenCmd::Input(input) => self.input(input).await,
            ScreenCmd::Go { url } => {
                if !same_site(&url, &self.site) {
                    return Err(format!(
                        "{url} is not on this lane's site ({}); the address bar opens pages of that site only",
                        origin(&self.site).unwrap_or(&self.site)
                    ));
                }
                self.caller.call(NavigateParams::new(url)).await.map(drop)
            }
            ScreenCmd::Back => {
                let history = self
                    .caller
                    .call(GetNavigationHistoryParams::default())
                    .await;
                match history {
                    Ok(h) if h.current_index > 0 => {
                        let entry = usize::try_from(h.current_index - 1)
                            .ok()
                            .and_then(|i| h.entries.get(i));
                        match entry {
                            Some(entry) => self
                                .caller
                                .call(NavigateToHistoryEntryParams::new(entry.id))
                                .await
                                .map(drop),
                            None => Ok(()),
                        }
                    }
                    Ok(_) => return Err("there is no page to go back to".into()),
                    Err(e) => Err(e),
                }
            }
            ScreenCmd::Reload => self.caller.call(ReloadParams::default()).await.map(drop),
            ScreenCmd::Open { .. } | ScreenCmd::Close => Ok(()),
        };
        done.map_err(|e| e.to_string())
    }

    async fn input(&self, input: ScreenInput) -> Result<(), PageError> {
        match input {
            ScreenInput::Mouse {
                kind,
                x,
                y,
                button,
                clicks,
                modifiers,
            } => {
                let kind = match kind {
                    MouseKind::Move => DispatchMouseEventType::MouseMoved,
                    MouseKind::Down => DispatchMouseEventType::MousePressed,
                    MouseKind::Up => DispatchMouseEventType::MouseReleased,
                };
                let mut params = DispatchMouseEventParams::new(kind, x, y);
                params.button = Some(match button {
                    MouseButton::None => CdpButton::None,
                    MouseButton::Left => CdpButton::Left,
                    MouseButton::Middle => CdpButton::Middle,
                    MouseButton::Right => CdpButton::Right,
                });
                params.click_count = Some(i64::from(clicks));
                params.modifiers = Some(i64::from(modifiers));
                self.caller.call(params).await.map(drop)
            }
            ScreenInput::Wheel { x, y, dx, dy } => {
                let mut params =
                    DispatchMouseEventParams::new(DispatchMouseEventType::MouseWheel, x, y);
                params.delta_x = Some(dx);
                params.delta_y = Some(dy);
                self.caller.call(params).await.map(drop)
            }
            ScreenInput::Key {
                kind,
                key,
                code,
                key_code,
                modifiers,
            } => {
                let kind = match kind {
                    // Text comes as `Text`: a key down here is a raw one (no character).
                    KeyKind::Down => DispatchKeyEventType::RawKeyDown,
                    KeyKind::Up => DispatchKeyEventType::KeyUp,
                };
                let mut params = DispatchKeyEventParams::new(kind.clone());
                // Enter types a line end as a real keyboard's does, so a form submits.
                if kind == DispatchKeyEventType::RawKeyDown && key == "Enter" {
                    params.r#type = DispatchKeyEventType::KeyDown;
                    params.text = Some("\r".into());
                }
                params.key = Some(key);
                params.code = Some(code);
                params.windows_virtual_key_code = Some(i64::from(key_code));
                params.native_virtual_key_code = Some(i64::from(key_code));
                params.modifiers = Some(i64::from(modifiers));
                self.caller.call(params).await.map(drop)
            }
            ScreenInput::Text { text } => self
                .caller
                .call(InsertTextParams::new(text))
                .await
                .map(drop),
        }
    }
}

/// `scheme://host[:port]` of a URL, lowercased by the caller's comparison.
fn origin(url: &str) -> Option<&str> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme.is_empty() {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    // A user part (`user@host`) could make one site look like another.
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    Some(&url[..scheme.len() + 3 + end])
}

/// The host of an origin, without its port (an IPv6 host keeps its brackets).
fn host(origin: &str) -> &str {
    let authority = origin.split_once("://").map_or(origin, |(_, a)| a);
    if let Some(bracketed) = authority.strip_prefix('[') {
        return bracketed
            .find(']')
            .map_or(authority, |end| &authority[..end + 2]);
    }
    authority
        .split_once(':')
        .map_or(authority, |(host, _)| host)
}

/// Whether `url` is of the lane's site: the same scheme, and the same host and port as
/// the lane's page, or a host under the same domain (its last two labels:
/// `accounts.example.com` for `chat.example.com`; a guess that does not know public
/// suffixes such as `co.uk`). An address given as an IP must match exactly.
fn same_site(url: &str, site: &str) -> bool {
    let (Some(to), Some(base)) = (origin(url), origin(site)) else {
        return false;
    };
    let (to, base) = (to.to_ascii_lowercase(), base.to_ascii_lowercase());
    if to == base {
        return true;
    }
    let scheme = |o: &str| o.split_once("://").map(|(s, _)| s.to_owned());
    if scheme(&to) != scheme(&base) || !matches!(scheme(&to).as_deref(), Some("https" | "http")) {
        return false;
    }
    let (to_host, base_host) = (host(&to), host(&base));
    if base_host.parse::<std::net::IpAddr>().is_ok() || base_host.starts_with('[') {
        return false;
    }
    let domain = |h: &str| {
        let labels: Vec<&str> = h.rsplitn(3, '.').collect();
        match labels.as_slice() {
            [tld, name, ..] => Some(format!("{name}.{tld}")),
            _ => None,
        }
    };
    match domain(base_host) {
        Some(d) => to_host == d || to_host.ends_with(&format!(".{d}")),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_bar_stays_on_the_lanes_site() {
        let sandbox = "http://127.0.0.1:41234/?account=a&login=1";
        assert!(same_site("http://127.0.0.1:41234/chat", sandbox));
        assert!(!same_site("http://127.0.0.1:9/", sandbox), "another port");
        assert!(
            !same_site("https://127.0.0.1:41234/", sandbox),
            "another scheme"
        );
        assert!(!same_site("http://evil.example/", sandbox));
        let deepseek = "https://chat.deepseek.com/";
        assert!(same_site("https://chat.deepseek.com/sign_in", deepseek));
        assert!(same_site("https://accounts.deepseek.com/x", deepseek));
        assert!(same_site("https://deepseek.com", deepseek));
        assert!(!same_site("https://deepseek.com.evil.example/", deepseek));
        assert!(!same_site(
            "https://chat.deepseek.com@evil.example/",
            deepseek
        ));
        assert!(
            !same_site("http://chat.deepseek.com/", deepseek),
            "downgraded"
        );
        assert!(!same_site("javascript:alert(1)", deepseek));
        assert!(!same_site("file:///etc/passwd", deepseek));
        assert!(!same_site("chat.deepseek.com", deepseek));
    }
}
