//! What the runtime shows: the status report, the queue listing and one request's
//! record, the event stream the panel follows, readiness, and `/metrics`.

use super::*;

impl Runtime {
    /// One listing of the queue: live requests (pending in order, then processing) and
    /// the most recent finished ones.
    pub fn queue_view(&self, finished: usize) -> QueueView {
        let inner = self.lock();
        let now = Instant::now();
        let requests = inner
            .queue
            .live()
            .map(|e| inner.entry_view(e, now))
            .collect();
        let history: Vec<&Entry> = inner.queue.history().collect();
        let finished = history
            .iter()
            .rev()
            .take(finished)
            .map(|e| inner.entry_view(e, now))
            .collect();
        QueueView {
            runtime: RuntimeStatus {
                state: inner.state,
                reason: inner.reason.clone(),
            },
            pending: inner.queue.pending_len(),
            processing: inner.queue.processing_len(),
            requests,
            finished,
        }
    }

    /// One request, live or finished (as long as the history holds it).
    pub fn request_view(&self, id: RequestId) -> Option<RequestView> {
        let inner = self.lock();
        let e = inner.queue.get(id)?;
        Some(inner.entry_view(e, Instant::now()))
    }

    /// Every request and runtime change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<QueueEvent> {
        self.events.subscribe()
    }

    /// Counts a request refused before it was queued, for `/metrics`.
    pub fn rejected(&self, status: u16, reason: &'static str) {
        self.lock().metrics.rejected(status, reason);
    }

    /// The Prometheus text for `GET /metrics`.
    pub fn metrics_text(&self) -> String {
        let inner = self.lock();
        // Every served prefix gets a series, 0 included: a balancer's or an autoscaler's
        // query then reads an empty queue instead of no data.
        let served = inner.served_prefixes();
        let mut pending: std::collections::BTreeMap<&str, usize> =
            served.iter().map(|p| (p.as_str(), 0)).collect();
        for e in inner.queue.live().filter(|e| e.state == State::Pending) {
            *pending.entry(e.prefix.as_str()).or_default() += 1;
        }
        // A lane a reload removed is listed until it has stopped, as in `prq status`.
        let lanes = inner
            .lanes
            .iter()
            .filter(|s| !s.retired || s.is_alive())
            .map(|s| {
                (
                    s.lane.id.as_str(),
                    s.lane.prefix.as_str(),
                    s.state.as_str(),
                    usize::from(s.state == LaneState::Busy),
                )
            })
            .collect();
        let now = Instant::now();
        let cooling = inner
            .lanes
            .iter()
            .filter_map(|s| {
                let left = inner.queue.cooling_left(s.qidx?, now)?;
                Some((s.lane.id.as_str(), s.lane.prefix.as_str(), left))
            })
            .collect();
        inner.metrics.render(&Gauges {
            pending_by_prefix: pending,
            lanes,
            cooling,
            runtime_state: inner.state.as_str(),
            ready: inner.readiness().ready,
            log_lines_dropped: crate::logs::lines_dropped(),
        })
    }

    /// What `GET /readyz` answers.
    pub fn readiness(&self) -> Readiness {
        self.lock().readiness()
    }

    pub fn status(&self) -> StatusReport {
        self.status_of(&self.lock())
    }

    pub(super) fn status_of(&self, inner: &Inner) -> StatusReport {
        let now = Instant::now();
        let sandbox_lane = inner
            .enabled
            .iter()
            .any(|&i| inner.lanes[i].lane.provider == "sandbox");
        StatusReport {
            pid: std::process::id(),
            home: self.home.root().display().to_string(),
            config: inner.config_path.as_ref().map(|p| p.display().to_string()),
            runtime: RuntimeStatus {
                state: inner.state,
                reason: inner.reason.clone(),
            },
            mode: inner.mode.clone(),
            api_url: self.urls.api.clone(),
            panel_url: self.urls.panel.clone(),
            sandbox_url: self.urls.sandbox.clone().filter(|_| sandbox_lane),
            lanes: inner
                .lanes
                .iter()
                .filter(|s| !s.retired || s.is_alive())
                .map(|s| LaneStatus {
                    id: s.lane.id.clone(),
                    provider: s.lane.provider.clone(),
                    prefix: s.lane.prefix.clone(),
                    account: s.lane.account.clone(),
                    state: s.state,
                    worker_pid: s.worker_pid,
                    browser_pid: s.browser_pid,
                    logged_in: s.logged_in,
                    presence: crate::presence::status(
                        &s.lane,
                        s.user_agent.as_deref(),
                        s.release.as_ref(),
                    ),
                    current: s.qidx.and_then(|q| inner.queue.lane_request(q)),
                    note: s
                        .view
                        .as_ref()
                        .map(|v| v.describe())
                        .or_else(|| s.note.clone()),
                    cooling_left_ms: s
                        .qidx
                        .and_then(|q| inner.queue.cooling_left(q, now))
                        .map(|d| d.as_millis() as u64),
                    after_reply: s.lane.after_reply,
                    chats: s.chats,
                })
                .collect(),
            queue: QueueCounts {
                pending: inner.queue.pending_len(),
                processing: inner.queue.processing_len(),
            },
            log_lines_dropped: crate::logs::lines_dropped(),
        }
    }
}

impl Inner {
    pub(super) fn readiness(&self) -> Readiness {
        crate::ready::readiness(
            self.state,
            // A lane a reload takes out serves no new request, whatever it is doing.
            self.lanes
                .iter()
                .filter(|s| !s.retired && !s.qidx.is_some_and(|q| self.queue.is_leaving(q)))
                .map(|s| {
                    // A waking lane shows `starting` but serves by itself soon, as the
                    // sleeping lane it was did: readiness does not flap on a wake.
                    let waking = s.qidx.is_some_and(|q| self.queue.is_waking(q));
                    let state = match waking {
                        true => LaneState::Asleep,
                        false => s.state,
                    };
                    (state, s.logged_in)
                }),
        )
    }

    pub(super) fn entry_view(&self, e: &Entry, now: Instant) -> RequestView {
        let ms = |d: Duration| d.as_millis() as u64;
        let end = e.ended.unwrap_or(now);
        RequestView {
            id: e.id,
            state: e.state,
            model: e.meta.model.clone(),
            prefix: e.prefix.clone(),
            lane: e.lane.and_then(|q| self.lane_id(q)).map(str::to_owned),
            client: e.meta.client.clone(),
            kind: e.meta.kind.to_owned(),
            messages: e.meta.messages,
            prompt_chars: e.meta.prompt_chars,
            stream: e.meta.stream,
            position: self.queue.position(e.id),
            admitted_ms: e.meta.admitted_unix_ms,
            age_ms: ms(end - e.admitted),
            wait_ms: e.started.map(|s| ms(s - e.admitted)),
            chars: e.chars,
            stopping: e.stopping.map(|(_, cause)| cause),
            deadline: e.deadline,
            error: e.error.map(str::to_owned),
        }
    }

    /// What each served prefix offers (its first lane's models), in the order of
    /// [`served_prefixes`](Self::served_prefixes).
    pub(super) fn menus(&self) -> Vec<router::Menu> {
        self.served_prefixes()
            .into_iter()
            .map(|prefix| {
                let lane = self
                    .enabled
                    .iter()
                    .map(|&i| &self.lanes[i].lane)
                    .find(|l| l.prefix == prefix);
                let models = lane.map(|l| l.models.clone()).unwrap_or_default();
                let search = lane.is_some_and(|l| {
                    prq_protocol::provider::Provider::from_name(&l.provider)
                        .is_some_and(|p| p.has_browser())
                });
                router::Menu {
                    prefix,
                    models,
                    search,
                }
            })
            .collect()
    }

    pub(super) fn served_prefixes(&self) -> Vec<String> {
        let mut prefixes: Vec<String> = Vec::new();
        for &i in &self.enabled {
            if self.lanes[i].qidx.is_some_and(|q| self.queue.is_removed(q)) {
                continue;
            }
            let prefix = &self.lanes[i].lane.prefix;
            if !prefixes.contains(prefix) {
                prefixes.push(prefix.clone());
            }
        }
        prefixes
    }
}
