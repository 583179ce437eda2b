//! Requests in and out: admission, dispatch to lanes (`pump`), the queue actions
//! (cancel, stop, stop-all, clear), progress and slow clients, and the deadlines.

use super::*;
use crate::controls;
use crate::queue::StopCause;

/// Progress events for one request are published at most this often.
pub(super) const PROGRESS_EVERY: Duration = Duration::from_millis(200);

impl Runtime {
    /// Admits a request; its events arrive on the ticket.
    pub fn submit(self: &Arc<Self>, sub: Submission) -> Result<Ticket, SubmitError> {
        let mut inner = self.lock();
        if let Some(limit) = inner.config.limits.max_concurrent_per_client {
            if inner.per_client.get(&sub.meta.client).copied().unwrap_or(0) >= limit {
                return Err(SubmitError::ClientBusy {
                    client: sub.meta.client,
                    limit,
                });
            }
        }
        if inner.state == RuntimeState::Stopped {
            return Err(SubmitError::RuntimeStopped {
                reason: inner.reason.clone().unwrap_or_default(),
            });
        }
        if let Some(by) = inner.drain.as_ref().and_then(Drain::refusing) {
            return Err(SubmitError::Draining(by));
        }
        let menus = inner.menus();
        let model = sub.meta.model.clone();
        let unknown = |mut model: String| {
            // The ID goes into the error message: keep an absurd one short.
            if let Some((cut, _)) = model.char_indices().nth(80) {
                model.truncate(cut);
                model.push('…');
            }
            SubmitError::UnknownModel {
                model,
                served: router::model_ids(&menus),
            }
        };
        let Some(routed) = router::route(&model, &menus) else {
            return Err(unknown(model));
        };
        let prefix = routed.prefix;
        let mut messages = sub.messages;
        let (thinking, controls) =
            controls::decide(&routed, &mut messages, sub.settings, sub.search_tool);
        let client = sub.meta.client.clone();
        let id = match inner.queue.admit(prefix, sub.meta, Instant::now()) {
            Ok(id) => id,
            Err(AdmitError::Full(n)) => return Err(SubmitError::QueueFull(n)),
            Err(AdmitError::Cooling {
                prefix,
                retry_after,
            }) => {
                return Err(SubmitError::Cooling {
                    prefix,
                    retry_after_s: whole_secs(retry_after),
                })
            }
            // Routed prefixes have lanes; were the two ever to disagree, the client is
            // told its model is not served rather than the daemon panicking.
            Err(AdmitError::NoLane(_)) => return Err(unknown(model)),
        };
        let (tx, rx) = relay::channel(inner.config.limits.client_buffer_bytes);
        let generate = Generate {
            id,
            thinking,
            messages,
            controls,
            attachments: sub.attachments,
        };
        *inner.per_client.entry(client.clone()).or_default() += 1;
        inner.jobs.insert(
            id,
            Job {
                generate,
                tx,
                client,
                progress_published: None,
                _files: sub.files,
            },
        );
        tracing::debug!(request = id, %model, "admitted");
        self.pump(&mut inner);
        drop(inner);
        Ok(Ticket::new(id, rx, self.clone()))
    }

    /// The model IDs that route now.
    pub fn models(&self) -> Vec<String> {
        router::model_ids(&self.lock().menus())
    }

    /// Sends dispatched requests to their lanes and publishes what changed.
    pub(super) fn pump(&self, inner: &mut Inner) {
        for (id, qidx) in inner.queue.dispatch(Instant::now()) {
            let slot_idx = inner.enabled[qidx];
            let lane_id = inner.lanes[slot_idx].lane.id.clone();
            let job = &inner.jobs[&id];
            job.tx.send(ReqEvent::Started {
                lane: lane_id.clone(),
            });
            let slot = &mut inner.lanes[slot_idx];
            slot.state = LaneState::Busy;
            inner.status_changed = true;
            tracing::debug!(request = id, lane = %lane_id, "dispatched");
            let cmd = LaneCmd::Run {
                generate: job.generate.clone(),
                tx: job.tx.clone(),
            };
            if let Some(lane) = &slot.cmd {
                let _ = lane.send(cmd);
            }
        }
        for qidx in inner.queue.to_wake() {
            let slot = &mut inner.lanes[inner.enabled[qidx]];
            tracing::info!(lane = %slot.lane.id, "a request waits: waking the lane");
            // Its browser starts again, as at a start.
            slot.state = LaneState::Starting;
            inner.status_changed = true;
            inner.tell_lane(qidx, LaneCmd::Wake);
        }
        // Building the reports cost a third of all the CPU time a request took on echo
        // lanes (prq_bench: 6 000 → 9 400 requests/s without them); with nobody
        // watching, they are not built.
        let watched = self.events.receiver_count() > 0;
        for event in inner.queue.drain_events() {
            let Some(entry) = inner.queue.get(event.id) else {
                continue;
            };
            if event.state.is_terminal() {
                inner.metrics.ended(entry);
                // One line per request at the default level: how it ended. (Its way
                // there is at debug; per-request log lines were a measurable share
                // of prq's own cost per request.)
                let ms = |d: Duration| d.as_millis() as u64;
                tracing::info!(
                    request = entry.id,
                    model = %entry.meta.model,
                    client = %entry.meta.client,
                    lane = entry.lane.and_then(|q| inner.lane_id(q)).unwrap_or("-"),
                    state = ?entry.state,
                    error = entry.error,
                    wait_ms = entry.started.map(|s| ms(s - entry.admitted)),
                    took_ms = entry.ended.map(|e| ms(e - entry.admitted)),
                    chars = entry.chars,
                    "request ended"
                );
            }
            if !watched {
                continue;
            }
            // The entry may have moved on within this pump; report it as of the event.
            let mut view = inner.entry_view(entry, Instant::now());
            view.state = event.state;
            view.lane = event.lane.and_then(|q| inner.lane_id(q)).map(str::to_owned);
            // A subscriber that left since is fine.
            let _ = self.events.send(QueueEvent::Request(Box::new(view)));
        }
        if inner.status_changed {
            inner.status_changed = false;
            if watched {
                let status = self.status_of(inner);
                let _ = self.events.send(QueueEvent::Status(Box::new(status)));
            }
        }
        self.bump();
        self.deadlines_moved.notify_one();
    }

    /// The client went away.
    pub(super) fn abandon(&self, id: RequestId) {
        let mut inner = self.lock();
        match inner.queue.abandon(id, Instant::now()) {
            Abandoned::Cancelled => {
                inner.end_job(id, End::Cancelled);
                tracing::info!(request = id, "cancelled: client went away");
                self.pump(&mut inner);
            }
            Abandoned::Stop(qidx) => {
                tracing::info!(request = id, "stopping: client went away");
                inner.tell_lane(qidx, LaneCmd::Stop { id });
            }
            Abandoned::Nothing => {}
        }
    }

    /// A request's client is `unread` bytes behind reading its answer, over its
    /// budget (from its lane task): the request is stopped, and ends `client_too_slow`.
    pub(crate) fn client_too_slow(&self, id: RequestId, unread: usize) {
        let mut inner = self.lock();
        if let Some(qidx) = inner
            .queue
            .stop_once(id, StopCause::ClientTooSlow, Instant::now())
        {
            tracing::warn!(
                request = id,
                unread,
                budget = inner.config.limits.client_buffer_bytes,
                "client_too_slow: its client does not read the answer; stopping"
            );
            inner.tell_lane(qidx, LaneCmd::Stop { id });
            self.pump(&mut inner);
        }
    }

    /// A request's answer reached one of its `stop` strings (from its HTTP handler,
    /// which has sent the answer up to it): the site's generation is stopped, and the
    /// request ends `completed`.
    pub(crate) fn stop_string_reached(&self, id: RequestId) {
        let mut inner = self.lock();
        if let Some(qidx) = inner
            .queue
            .stop_once(id, StopCause::StopSequence, Instant::now())
        {
            tracing::info!(request = id, "stop string reached; stopping the site");
            inner.tell_lane(qidx, LaneCmd::Stop { id });
            self.pump(&mut inner);
        }
    }

    /// Cancels a pending request (queue API and CLI).
    pub fn cancel(&self, id: RequestId) -> Result<(), ActionError> {
        let mut inner = self.lock();
        inner.queue.cancel(id, Instant::now())?;
        tracing::info!(request = id, "cancelled");
        inner.end_job(id, End::Cancelled);
        self.pump(&mut inner);
        Ok(())
    }

    /// Stops a processing request (queue API and CLI). It ends when its lane confirms.
    pub fn stop(&self, id: RequestId) -> Result<(), ActionError> {
        let mut inner = self.lock();
        let qidx = inner.queue.stop(id, Instant::now())?;
        tracing::info!(request = id, "stopping");
        inner.tell_lane(qidx, LaneCmd::Stop { id });
        self.pump(&mut inner);
        Ok(())
    }

    /// Stops every processing request; returns their IDs.
    pub fn stop_all(&self) -> Vec<RequestId> {
        let mut inner = self.lock();
        let stopped = inner.queue.stop_all(Instant::now());
        for &(id, qidx) in &stopped {
            inner.tell_lane(qidx, LaneCmd::Stop { id });
        }
        tracing::info!(count = stopped.len(), "stop all");
        self.pump(&mut inner);
        stopped.into_iter().map(|(id, _)| id).collect()
    }

    /// Cancels every pending request; returns their IDs.
    pub fn clear(&self) -> Vec<RequestId> {
        let mut inner = self.lock();
        let cancelled = inner.queue.clear(Instant::now());
        for &id in &cancelled {
            inner.end_job(id, End::Cancelled);
        }
        tracing::info!(count = cancelled.len(), "queue cleared");
        self.pump(&mut inner);
        cancelled
    }

    /// Text arrived for a request (from its lane task): moves its deadlines, and now
    /// and then tells the queue's watchers how far it got.
    pub(crate) fn progress(&self, id: RequestId, chars: usize) {
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.queue.progress(id, chars, now) {
            self.deadlines_moved.notify_one();
        }
        let due = match inner.jobs.get(&id) {
            Some(job) => job
                .progress_published
                .is_none_or(|at| now >= at + PROGRESS_EVERY),
            None => false,
        };
        if due && self.events.receiver_count() > 0 {
            if let Some(job) = inner.jobs.get_mut(&id) {
                job.progress_published = Some(now);
            }
            if let Some(e) = inner.queue.get(id) {
                let _ = self
                    .events
                    .send(QueueEvent::Request(Box::new(inner.entry_view(e, now))));
            }
        }
    }

    /// Applies the deadlines now; returns when they next need applying.
    pub(super) fn expire(&self) -> Option<Instant> {
        let mut inner = self.lock();
        let expired = inner.queue.expire(Instant::now());
        let any = !expired.is_empty();
        for expired in expired {
            match expired {
                Expired::Waiting { id, deadline } => {
                    tracing::info!(
                        request = id,
                        deadline = deadline.as_str(),
                        "timed out waiting"
                    );
                    inner.end_job(id, End::TimedOut(deadline));
                }
                Expired::Stop { id, lane, deadline } => {
                    tracing::info!(
                        request = id,
                        deadline = deadline.as_str(),
                        "timed out; stopping"
                    );
                    inner.tell_lane(lane, LaneCmd::Stop { id });
                }
                Expired::Cooled { lane } => {
                    let slot = inner.enabled[lane];
                    let s = &mut inner.lanes[slot];
                    if s.state == LaneState::Cooling {
                        s.state = LaneState::Idle;
                        tracing::info!(lane = %s.lane.id, "cooled down: takes requests again");
                    }
                    inner.status_changed = true;
                }
                Expired::LaneStuck { id, lane } => {
                    let reason = format!(
                        "did not end request {id} within {:?} of being told to stop",
                        crate::queue::STOP_GRACE
                    );
                    inner.tell_lane(lane, LaneCmd::Kill { reason });
                }
                Expired::Sleep { lane } => {
                    tracing::info!(
                        lane = inner.lane_id(lane).unwrap_or("-"),
                        "idle: closing its browser"
                    );
                    inner.tell_lane(lane, LaneCmd::Sleep);
                }
            }
        }
        // Only when something changed: pumping wakes this task again.
        if any {
            self.pump(&mut inner);
        }
        inner.queue.next_deadline()
    }
}

impl Inner {
    /// Fails the waiting requests whose prefix no lane serves any more (a reload
    /// removed its lanes).
    pub(super) fn fail_unserved(&mut self) {
        for id in self.queue.fail_unserved(Instant::now()) {
            let prefix = self
                .queue
                .get(id)
                .map(|e| e.prefix.clone())
                .unwrap_or_default();
            self.end_job(id, End::Failed(Failed::LaneRemoved { prefix }));
        }
    }

    /// The one place a request's client is told how it ended.
    pub(super) fn end_job(&mut self, id: RequestId, end: End) {
        if let Some(job) = self.jobs.remove(&id) {
            if let Some(n) = self.per_client.get_mut(&job.client) {
                *n -= 1;
                if *n == 0 {
                    self.per_client.remove(&job.client);
                }
            }
            job.tx.send(ReqEvent::End(end));
        }
    }
}

/// Sleeps until the queue's next deadline (or until one may have moved earlier) and
/// applies the deadlines; runs for the daemon's lifetime.
pub(super) async fn enforce_deadlines(rt: Arc<Runtime>) {
    let mut next: Option<Instant> = None;
    loop {
        let moved = rt.deadlines_moved.notified();
        tokio::pin!(moved);
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut moved => {}
            _ = sleep => {}
        }
        next = rt.expire();
    }
}
