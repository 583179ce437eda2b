//! What lane tasks report (`lanes::LaneReports`): a lane ready, asleep, finished with
//! a request, rate-limited, or gone — and what the runtime does about each.

use super::*;

impl Runtime {
    /// A lane's site said rate limit: the lane cools, and its request goes to another
    /// lane or fails (see [`Queue::rate_limited`]).
    pub(super) fn rate_limited(
        &self,
        inner: &mut Inner,
        slot: usize,
        id: RequestId,
        failure: Failure,
    ) {
        let now = Instant::now();
        let site_wait = failure.retry_after_s.map(Duration::from_secs);
        let Ok(limit) = inner.queue.rate_limited(id, site_wait, now) else {
            return;
        };
        let lane_id = inner.lanes[slot].lane.id.clone();
        let cooling = limit.until - now;
        tracing::warn!(lane = %lane_id, cooling_s = cooling.as_secs(), "rate limited by the site: the lane cools");
        let s = &mut inner.lanes[slot];
        s.state = LaneState::Cooling;
        inner.status_changed = true;
        let prefix = s.lane.prefix.clone();
        match limit.request {
            RateLimited::Requeued => {
                tracing::info!(request = id, lane = %lane_id, "requeued: rate limited before anything was streamed")
            }
            RateLimited::Failed { retry_after } => {
                let failure = Failure {
                    retry_after_s: Some(whole_secs(retry_after)),
                    ..failure
                };
                inner.end_job(id, End::Failed(Failed::Site(failure)));
            }
        }
        for other in limit.also_failed {
            let retry_after_s = inner.queue.soonest_free(&prefix, now).map_or(0, whole_secs);
            let failure = Failure {
                kind: FailureKind::RateLimited,
                message: format!(
                    "every lane of `{prefix}` is rate limited by its site (cooling); the soonest is free in {retry_after_s} s ([accounts] wait_for_cooldown = false)"
                ),
                retry_after_s: Some(retry_after_s),
            };
            inner.end_job(other, End::Failed(Failed::Site(failure)));
        }
        self.pump(inner);
    }

    /// A lane that a reload took out is gone: a removed one stays gone, a changed one
    /// starts again with its new settings. Its loss is no crash of the runtime's.
    pub(super) fn lane_left(
        self: &Arc<Self>,
        inner: &mut Inner,
        slot: usize,
        generation: u64,
        crash: Option<String>,
    ) {
        let now = Instant::now();
        inner.status_changed = true;
        let s = &mut inner.lanes[slot];
        s.cmd = None;
        s.worker_pid = None;
        s.browser_pid = None;
        s.logged_in = None;
        s.user_agent = None;
        s.release = None;
        s.state = LaneState::Stopped;
        let lane_id = s.lane.id.clone();
        // Only a lane that runs (so has a queue index) is taken out.
        let Some(qidx) = s.qidx else { return };
        if let Some(cause) = &crash {
            tracing::warn!(lane = %lane_id, %cause, "lane lost while a reload took it out");
        }
        // A changed lane starts again with its new settings; a removed one does not.
        let restarting = s.next.is_some() && inner.state == RuntimeState::Running;
        match inner.queue.lane_down(qidx, true, now) {
            LaneLoss::Failed(id) => inner.end_job(
                id,
                End::Failed(Failed::LaneCrashed {
                    lane: lane_id.clone(),
                    cause: crash.unwrap_or_else(|| "its worker exited".into()),
                    restarting,
                }),
            ),
            LaneLoss::Requeued(id) => {
                tracing::info!(request = id, lane = %lane_id, "requeued: nothing of it was streamed")
            }
            LaneLoss::Idle => {}
        }
        inner.fail_unserved();
        let s = &mut inner.lanes[slot];
        match s.next.take() {
            Some(next) if inner.state == RuntimeState::Running => {
                s.lane = next;
                s.note = None;
                s.turn_waits = false;
                s.restarts.clear();
                inner.queue.lane_restarting(qidx);
                tracing::info!(lane = %lane_id, "restarting with its new settings");
                let config = inner.config.clone();
                self.spawn_lane(inner, slot, generation, &config);
            }
            Some(next) => {
                s.lane = next;
                s.turn_waits = false;
            }
            None => tracing::info!(lane = %lane_id, "removed by a reload: stopped"),
        }
        let prefix = inner.lanes[slot].lane.prefix.clone();
        Self::next_turn(inner, &prefix);
        self.pump(inner);
    }
}

impl LaneReports for Runtime {
    fn ready(&self, slot: usize, generation: u64, ready: lanes::Ready) {
        let lanes::Ready {
            worker_pid,
            browser_pid,
            logged_in,
            user_agent,
            release,
        } = ready;
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        inner.status_changed = true;
        let s = &mut inner.lanes[slot];
        s.state = LaneState::Idle;
        s.worker_pid = Some(worker_pid);
        s.browser_pid = browser_pid;
        s.logged_in = logged_in;
        s.user_agent = user_agent;
        s.release = release;
        let qidx = s.qidx.expect("enabled lane");
        tracing::info!(lane = %s.lane.id, worker_pid, ?browser_pid, "lane ready");
        inner.queue.lane_ready(qidx);
        // Restarted by a reload while its account cooled: it cools on.
        if inner.queue.cooling_left(qidx, Instant::now()).is_some() {
            inner.lanes[slot].state = LaneState::Cooling;
        }
        // A lane back from a reload's restart lets the next of its prefix restart.
        let prefix = inner.lanes[slot].lane.prefix.clone();
        Self::next_turn(&mut inner, &prefix);
        let all_ready = inner
            .enabled
            .iter()
            .all(|&i| inner.lanes[i].state != LaneState::Starting);
        if inner.state == RuntimeState::Starting && all_ready {
            inner.state = RuntimeState::Running;
            tracing::info!("runtime running");
        }
        self.pump(&mut inner);
    }

    /// The lane's browser is closed after it was told to sleep.
    fn asleep(&self, slot: usize, generation: u64) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        let s = &mut inner.lanes[slot];
        s.browser_pid = None;
        // A lane woken before its worker said it slept is starting again already.
        if s.state == LaneState::Idle {
            s.state = LaneState::Asleep;
            tracing::info!(lane = %s.lane.id, "lane asleep");
        }
        inner.status_changed = true;
        self.pump(&mut inner);
    }

    fn chat_deleted(&self, slot: usize, id: RequestId, deleted: bool) {
        let mut inner = self.lock();
        let s = &mut inner.lanes[slot];
        if deleted {
            s.chats.deleted += 1;
        } else {
            s.chats.failed += 1;
            tracing::warn!(lane = %s.lane.id, request = id, "the chat the request made could not be deleted (after_reply = \"delete\"); the lane's log says why");
        }
        inner.status_changed = true;
    }

    fn recovering(&self, slot: usize, generation: u64) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        let s = &mut inner.lanes[slot];
        s.state = LaneState::Recovering;
        let qidx = s.qidx.expect("enabled lane");
        tracing::info!(lane = %s.lane.id, "lane recovering its page");
        inner.queue.lane_recovering(qidx);
        inner.status_changed = true;
    }

    fn login_changed(&self, slot: usize, generation: u64, logged_in: Option<bool>) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        let s = &mut inner.lanes[slot];
        s.logged_in = logged_in;
        if logged_in == Some(false) {
            tracing::warn!(
                lane = %s.lane.id,
                "the lane's page is logged out (found at a keep-alive reload): log in again from the panel's login view (`prq login {} --panel` prints its URL)",
                s.lane.prefix
            );
        } else {
            tracing::info!(lane = %s.lane.id, ?logged_in, "the lane's login changed (found at a keep-alive reload)");
        }
        inner.status_changed = true;
        self.pump(&mut inner);
    }

    fn progress(&self, id: RequestId, chars: usize) {
        Runtime::progress(self, id, chars);
    }

    fn too_slow(&self, id: RequestId, unread: usize) {
        self.client_too_slow(id, unread);
    }

    fn finished(&self, slot: usize, generation: u64, id: RequestId, end: End) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if let End::Failed(Failed::Site(f)) = &end {
            if f.kind == FailureKind::RateLimited {
                return self.rate_limited(&mut inner, slot, id, f.clone());
            }
        }
        let Ok((_, state)) = inner.queue.finish(id, end.outcome(), Instant::now()) else {
            return;
        };
        let end = match (state, inner.queue.get(id).and_then(|e| e.deadline)) {
            (State::TimedOut, Some(deadline)) => End::TimedOut(deadline),
            (State::Completed, _) => End::Completed,
            _ if inner.queue.get(id).and_then(|e| e.error) == Some("client_too_slow") => {
                End::Failed(Failed::ClientTooSlow {
                    budget: inner.config.limits.client_buffer_bytes,
                })
            }
            _ => end,
        };
        tracing::debug!(request = id, ?state, "finished");
        inner.end_job(id, end);
        let s = &mut inner.lanes[slot];
        if s.state == LaneState::Busy {
            s.state = LaneState::Idle;
            inner.status_changed = true;
        }
        self.pump(&mut inner);
    }

    /// The lane's worker is gone. `crash` is `None` after an orderly shutdown.
    fn gone(self: Arc<Self>, slot: usize, generation: u64, crash: Option<String>) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        let s = &inner.lanes[slot];
        if s.retired || s.next.is_some() || s.qidx.is_some_and(|q| inner.queue.is_removed(q)) {
            return self.lane_left(&mut inner, slot, generation, crash);
        }
        let now = Instant::now();
        inner.status_changed = true;
        let in_first_start = inner.state == RuntimeState::Starting;
        let restart = crash.is_some()
            && !in_first_start
            && matches!(inner.state, RuntimeState::Running | RuntimeState::Draining)
            && inner.config.on_lane_crash == OnLaneCrash::Restart
            && {
                let config = inner.config.clone();
                inner.lanes[slot].may_restart(now, &config)
            };
        let s = &mut inner.lanes[slot];
        let lane_id = s.lane.id.clone();
        s.cmd = None;
        s.state = match (&crash, restart) {
            (None, _) => LaneState::Stopped,
            (Some(_), true) => LaneState::Starting,
            (Some(_), false) => LaneState::Crashed,
        };
        if crash.is_none() || restart {
            s.worker_pid = None;
            s.browser_pid = None;
            s.logged_in = None;
        }
        let qidx = s.qidx.expect("enabled lane");
        let cause = crash.clone().unwrap_or_else(|| "its worker exited".into());
        match inner.queue.lane_down(qidx, restart, now) {
            LaneLoss::Failed(id) => inner.end_job(
                id,
                End::Failed(Failed::LaneCrashed {
                    lane: lane_id.clone(),
                    cause: cause.clone(),
                    restarting: restart,
                }),
            ),
            LaneLoss::Requeued(id) => {
                tracing::info!(request = id, lane = %lane_id, "requeued: nothing of it was streamed")
            }
            LaneLoss::Idle => {}
        }
        if crash.is_some() {
            tracing::error!(lane = %lane_id, %cause, "lane lost");
            if restart {
                inner.queue.lane_restarting(qidx);
                let s = &mut inner.lanes[slot];
                s.restarts.push_back(now);
                // 250 ms, 500 ms, 1 s, ... by restarts within the window.
                let backoff = Duration::from_millis(250) * (1 << (s.restarts.len() - 1).min(6));
                tracing::warn!(lane = %lane_id, ?backoff, "restarting the lane");
                let runtime = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(backoff).await;
                    runtime.respawn(slot, generation);
                });
            } else {
                let reason = if in_first_start {
                    format!("lane {lane_id} failed to start: {cause}")
                } else if inner.config.on_lane_crash == OnLaneCrash::Restart {
                    format!(
                        "lane {lane_id} crashed more than {} times in {} s: {cause}",
                        inner.config.restart_limit, inner.config.restart_window_s
                    )
                } else {
                    format!("lane {lane_id} crashed: {cause}")
                };
                self.stop_runtime(&mut inner, reason, DRAIN_GRACE);
            }
        }
        self.pump(&mut inner);
    }
}
