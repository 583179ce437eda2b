//! The panel's login view of a lane (`remote_login.rs` serves it): giving an idle lane
//! over to one person at a time, passing their input to its worker, and taking it back
//! when the view closes — whichever way it closes (the person, a dropped connection, the
//! lane's end). The lane is `login` meanwhile and takes no request; its worker checks
//! its page again after the view and says `Ready`, which makes it idle again.

use std::time::SystemTime;

use prq_protocol::screen::{ScreenCmd, ScreenEvent, MAX_SIDE};

use super::*;
use crate::queue::LoginRefused;

/// Frames waiting for a slow viewer; past it, frames are dropped (the next one shows
/// the page as it is anyway).
const VIEWER_BACKLOG: usize = 4;

/// From a view's end to the runtime hearing of its lane's: the lane task reaps its
/// worker first (its exit grace, and room).
const LANE_END_HEARD: Duration = Duration::from_secs(10);

/// Who holds a lane's login view.
pub(super) struct ViewHolder {
    /// Tells this view from a later one of the same lane.
    id: u64,
    /// The view's CSRF token: every input message must carry it.
    token: String,
    client: String,
    since: SystemTime,
    opened: Instant,
}

impl ViewHolder {
    /// For `prq status` and the panel: who holds the view, and since when.
    pub(super) fn describe(&self) -> String {
        format!(
            "in the panel's login view, opened from {} {} ago",
            self.client,
            ago(self.since)
        )
    }
}

fn ago(since: SystemTime) -> String {
    let secs = since.elapsed().unwrap_or_default().as_secs();
    match secs {
        0..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min {} s", secs / 60, secs % 60),
        _ => format!("{} h {} min", secs / 3600, secs / 60 % 60),
    }
}

/// Why a login view was not opened, or input not taken.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error("the panel's login view is turned off ([panel] remote_login = false in the config)")]
    Disabled,
    #[error("no lane {0:?} runs (see `prq status` for the lanes)")]
    NoLane(String),
    #[error("lane {0} has no page to log in to (echo lanes run no browser)")]
    NoPage(String),
    #[error("lane {lane} is generating request {request}; it finishes first: open the view again when it has, or stop it")]
    Busy { lane: String, request: RequestId },
    #[error("lane {lane} is {what}")]
    NotNow { lane: String, what: &'static str },
    #[error(
        "lane {lane}'s login view is held by {client} since {since} s ago; one person at a time"
    )]
    Held {
        lane: String,
        client: String,
        since: u64,
    },
    #[error("the system gave no random bytes for the view's token; try again")]
    NoRandomness,
    /// The view this input was for is closed (or the token is not its own).
    #[error("this login view is closed or its token is wrong; open the view again")]
    Stale,
}

/// An open login view, held by the connection that streams it: dropping it closes it.
pub struct LoginView {
    runtime: Arc<Runtime>,
    slot: usize,
    id: u64,
    pub lane: String,
    pub token: String,
    /// What the lane's page shows; ends when the lane does.
    pub events: mpsc::Receiver<ScreenEvent>,
}

impl LoginView {
    /// Whether the view is still the lane's (not closed by its person, nor lost with
    /// the lane).
    pub fn is_open(&self) -> bool {
        let inner = self.runtime.lock();
        inner
            .lanes
            .get(self.slot)
            .and_then(|s| s.view.as_ref())
            .is_some_and(|v| v.id == self.id)
    }
}

impl Drop for LoginView {
    fn drop(&mut self) {
        self.runtime.close_view(self.slot, self.id);
    }
}

impl Runtime {
    /// Gives lane `lane_id` over to a login view for `client`, its frames scaled to fit
    /// `max_width` × `max_height`.
    pub fn open_view(
        self: &Arc<Self>,
        lane_id: &str,
        client: &str,
        max_width: u32,
        max_height: u32,
    ) -> Result<LoginView, ViewError> {
        let mut inner = self.lock();
        if !inner.config.panel.remote_login {
            return Err(ViewError::Disabled);
        }
        let slot = inner
            .lanes
            .iter()
            .position(|s| s.lane.id == lane_id)
            .ok_or_else(|| ViewError::NoLane(lane_id.to_owned()))?;
        let lane = lane_id.to_owned();
        let s = &inner.lanes[slot];
        if s.lane.provider == prq_protocol::provider::Provider::Echo.name() {
            return Err(ViewError::NoPage(lane));
        }
        if let Some(holder) = &s.view {
            return Err(ViewError::Held {
                lane,
                client: holder.client.clone(),
                since: holder.since.elapsed().unwrap_or_default().as_secs(),
            });
        }
        let (Some(qidx), Some(cmd)) = (s.qidx, s.cmd.clone()) else {
            return Err(ViewError::NotNow {
                lane,
                what: "not running (`prq start` starts it)",
            });
        };
        // Before the lane is given over, so that nothing can fail after.
        let token = crate::auth::random_token().map_err(|_| ViewError::NoRandomness)?;
        inner
            .queue
            .lane_login(qidx)
            .map_err(|refused| match refused {
                LoginRefused::Busy(request) => ViewError::Busy {
                    lane: lane.clone(),
                    request,
                },
                LoginRefused::Not(what) => ViewError::NotNow {
                    lane: lane.clone(),
                    what,
                },
            })?;
        inner.views_opened += 1;
        let id = inner.views_opened;
        let (viewer, events) = mpsc::channel(VIEWER_BACKLOG);
        let _ = cmd.send(LaneCmd::ScreenOpen {
            max_width: max_width.clamp(64, MAX_SIDE),
            max_height: max_height.clamp(64, MAX_SIDE),
            viewer,
        });
        let s = &mut inner.lanes[slot];
        s.state = LaneState::Login;
        s.view = Some(ViewHolder {
            id,
            token: token.clone(),
            client: client.to_owned(),
            since: SystemTime::now(),
            opened: Instant::now(),
        });
        inner.status_changed = true;
        tracing::info!(lane = %lane, client, "login view opened: the lane takes no requests until it is closed");
        self.pump(&mut inner);
        drop(inner);
        Ok(LoginView {
            runtime: self.clone(),
            slot,
            id,
            lane,
            token,
            events,
        })
    }

    /// Passes the person's input (or navigation, or close) to the lane's worker, if
    /// `token` is the open view's.
    pub fn view_input(&self, lane_id: &str, token: &str, cmd: ScreenCmd) -> Result<(), ViewError> {
        let inner = self.lock();
        let s = inner
            .lanes
            .iter()
            .find(|s| s.lane.id == lane_id)
            .ok_or_else(|| ViewError::NoLane(lane_id.to_owned()))?;
        let holder = s.view.as_ref().ok_or(ViewError::Stale)?;
        if !crate::auth::tokens_match(&holder.token, token) {
            return Err(ViewError::Stale);
        }
        if cmd == ScreenCmd::Close {
            let (slot, id) = (
                inner.lanes.iter().position(|x| std::ptr::eq(x, s)),
                holder.id,
            );
            drop(inner);
            if let Some(slot) = slot {
                self.close_view(slot, id);
            }
            return Ok(());
        }
        if let Some(lane) = &s.cmd {
            let _ = lane.send(LaneCmd::Screen(cmd));
        }
        Ok(())
    }

    /// Why a lane's view ended without being closed: what became of the lane. The view
    /// ends as the lane's task lets go of it, a moment before the runtime hears of the
    /// lane's end; that moment is waited for (bounded).
    pub async fn view_lost(&self, lane_id: &str) -> String {
        let state_of = |inner: &Inner| {
            inner
                .lanes
                .iter()
                .find(|s| s.lane.id == lane_id)
                .map(|s| s.state)
        };
        self.wait_for(LANE_END_HEARD, |inner| {
            state_of(inner) != Some(LaneState::Login)
        })
        .await;
        let inner = self.lock();
        let state = state_of(&inner).map_or("gone", LaneState::as_str);
        match &inner.reason {
            Some(reason) => format!("the lane's browser or worker ended (the lane is {state}): {reason}"),
            None => format!("the lane's browser or worker ended (the lane is {state}); see `prq status` and `prq logs {lane_id}`"),
        }
    }

    /// Closes view `id` of `slot`, if it is still the open one: the worker stops its
    /// frames and checks its page again.
    fn close_view(&self, slot: usize, id: u64) {
        let mut inner = self.lock();
        let Some(s) = inner.lanes.get_mut(slot) else {
            return;
        };
        if s.view.as_ref().is_none_or(|v| v.id != id) {
            return;
        }
        let holder = s.view.take().expect("checked");
        if let Some(cmd) = &s.cmd {
            let _ = cmd.send(LaneCmd::Screen(ScreenCmd::Close));
        }
        tracing::info!(
            lane = %s.lane.id,
            client = %holder.client,
            seconds = holder.opened.elapsed().as_secs(),
            "login view closed: the lane checks its page again"
        );
        inner.status_changed = true;
        self.pump(&mut inner);
    }
}
