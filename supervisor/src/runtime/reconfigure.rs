//! `prq reload` and SIGHUP, applied: the planner (`crate::reload`) says what changed,
//! this carries it out lane by lane.

use super::*;

impl Runtime {
    /// Reads the config again (`path`, else the one in use) and applies the difference
    /// lane by lane: added lanes start, removed ones drain and stop, changed ones
    /// restart after their current request; the others serve on. A config that does not
    /// load, or that moves the listener, changes nothing.
    pub fn reload(self: &Arc<Self>, path: Option<PathBuf>) -> Result<ReloadReport, String> {
        let path = path.or_else(|| self.lock().config_path.clone());
        let loaded = match &path {
            Some(p) => Config::load(p),
            None => Ok(Config::builtin()),
        };
        let (config, access) = loaded
            .and_then(|c| Ok((Access::from_config(&c)?, c)))
            .map(|(a, c)| (c, a))
            .map_err(|e| format!("nothing changed: {}", format!("{e:#}").trim_end()))?;
        let mut inner = self.lock();
        if config.listen != inner.config.listen {
            return Err(format!(
                "nothing changed: listen changed ({} → {}), and the API cannot move to another address while prq runs; put listen back, or run `prq stop` and `prq start` to listen there",
                inner.config.listen, config.listen
            ));
        }
        let shown_path = path.as_ref().map(|p| p.display().to_string());
        let settings = reload::changed_settings(&inner.boot, &inner.config, &config);
        match inner.state {
            RuntimeState::Starting => {
                return Err(
                    "nothing changed: the runtime is starting; reload once `prq start` is done"
                        .into(),
                )
            }
            // Its lanes finish their requests and stop: nothing to add to or restart.
            RuntimeState::Draining => {
                return Err(
                    "nothing changed: prq is draining (prq drain); `prq start` calls the drain off, then `prq reload` applies the config"
                        .into(),
                )
            }
            RuntimeState::Stopped => {
                inner.config_path = path;
                access.carry_sessions(&inner.access);
                inner.access = Arc::new(access);
                inner.config = Arc::new(config);
                drop(inner);
                self.bump();
                return Ok(ReloadReport {
                    config: shown_path,
                    applied: false,
                    lanes: Vec::new(),
                    settings,
                });
            }
            RuntimeState::Running => {}
        }
        let all = config.lanes();
        let (notes, mode) = lanes_to_run(&config, &all);
        let current: Vec<reload::Current> = inner
            .lanes
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.retired)
            .map(|(slot, s)| reload::Current {
                slot,
                lane: s.next.clone().unwrap_or_else(|| s.lane.clone()),
                on: s.qidx.is_some_and(|q| !inner.queue.is_removed(q)),
                spec: self.lane_spec(&inner.config, s.next.as_ref().unwrap_or(&s.lane)),
            })
            .collect();
        let wanted = all
            .into_iter()
            .zip(notes)
            .map(|(lane, note)| reload::Wanted {
                lane,
                on: note.is_none(),
                note,
            })
            .collect();
        let draining = inner
            .lanes
            .iter()
            .filter(|s| s.retired && s.is_alive())
            .map(|s| s.lane.id.clone())
            .collect();
        let steps = reload::plan(&current, draining, wanted, |lane| {
            self.lane_spec(&config, lane)
        });

        let generation = inner.generation;
        let grace = config.deadlines().total;
        inner
            .queue
            .set_settings(mode.effective, config.max_pending, config.deadlines());
        inner.queue.set_accounts(config.accounts.settings());
        inner.mode = mode;
        inner.config = Arc::new(config);
        access.carry_sessions(&inner.access);
        inner.access = Arc::new(access);
        inner.config_path = path;
        let config = inner.config.clone();
        let mut lanes = Vec::new();
        for step in steps {
            let (id, change, detail) = match step {
                Step::Keep { slot, lane, note } => {
                    let s = &mut inner.lanes[slot];
                    // An unchanged lane keeps its settings; one that does not run takes the new.
                    if s.qidx.is_none() {
                        s.lane = lane;
                    }
                    // A lane waiting to restart keeps saying so.
                    if s.next.is_none() {
                        s.note = note.clone();
                    }
                    (
                        s.lane.id.clone(),
                        LaneChangeKind::Unchanged,
                        note.unwrap_or_default(),
                    )
                }
                Step::Update {
                    slot,
                    lane,
                    changed,
                } => {
                    let id = lane.id.clone();
                    let s = &mut inner.lanes[slot];
                    let idle_suspend = lane.idle_suspend;
                    // A lane waiting to restart takes it with its restart.
                    match &mut s.next {
                        Some(next) => *next = lane,
                        None => s.lane = lane,
                    }
                    if let Some(qidx) = s.qidx {
                        inner.queue.set_idle_suspend(qidx, idle_suspend);
                    }
                    let detail = format!(
                        "{} applied, with no restart (from its next idle time)",
                        changed.join(", ")
                    );
                    (id, LaneChangeKind::Updated, detail)
                }
                Step::Restart {
                    slot,
                    lane,
                    changed,
                } => {
                    let id = lane.id.clone();
                    let changed = changed.join(", ");
                    let Some(qidx) = inner.lanes[slot].qidx else {
                        // The planner restarts only running lanes; nothing to do.
                        continue;
                    };
                    let when = if inner.lanes[slot].is_alive() {
                        let prefix = lane.prefix.clone();
                        // Already waiting, or another lane of the prefix restarts: this
                        // one serves on until that one is back.
                        let wait =
                            inner.lanes[slot].turn_waits || inner.restarting_in(&prefix, slot);
                        let s = &mut inner.lanes[slot];
                        s.next = Some(lane);
                        if wait {
                            s.turn_waits = true;
                            s.note = Some(format!(
                                "{changed} changed by a reload: {}",
                                in_turn(&prefix)
                            ));
                            "restarts in turn, once the lane of its prefix ahead of it is back (it serves until then)"
                        } else {
                            s.note = Some(format!(
                                "{changed} changed by a reload: restarts after its current request"
                            ));
                            Self::begin_restart(&mut inner, slot, qidx, grace)
                        }
                    } else {
                        let s = &mut inner.lanes[slot];
                        s.lane = lane;
                        s.note = None;
                        inner.queue.lane_restarting(qidx);
                        self.spawn_lane(&mut inner, slot, generation, &config);
                        "starting with them"
                    };
                    let detail = format!("{changed} changed: {when}");
                    (id, LaneChangeKind::Restarting, detail)
                }
                Step::Start { slot, lane } => {
                    let id = lane.id.clone();
                    let s = &mut inner.lanes[slot];
                    s.note = None;
                    let detail = match s.qidx {
                        // Still finishing from an earlier reload: it starts again after.
                        Some(qidx) if s.is_alive() => {
                            s.next = Some(lane);
                            inner.queue.lane_leave(qidx, Leaving::Restart);
                            "starts after its current request"
                        }
                        Some(qidx) => {
                            s.lane = lane;
                            inner.queue.lane_restarting(qidx);
                            self.spawn_lane(&mut inner, slot, generation, &config);
                            "starting"
                        }
                        None => {
                            let prefix = lane.prefix.clone();
                            s.lane = lane;
                            let qidx = inner.queue.add_lane(prefix);
                            inner.lanes[slot].qidx = Some(qidx);
                            inner.enabled.push(slot);
                            self.spawn_lane(&mut inner, slot, generation, &config);
                            "starting"
                        }
                    };
                    (id, LaneChangeKind::Added, detail.to_string())
                }
                Step::Stop { slot, note } => {
                    let id = inner.lanes[slot].lane.id.clone();
                    let detail = self.take_out(&mut inner, slot, grace);
                    inner.lanes[slot].note = note.clone();
                    (
                        id,
                        LaneChangeKind::Removed,
                        format!("{detail}; {}", note.unwrap_or_default()),
                    )
                }
                Step::Remove { slot } => {
                    let id = inner.lanes[slot].lane.id.clone();
                    let detail = self.take_out(&mut inner, slot, grace);
                    inner.lanes[slot].retired = true;
                    (id, LaneChangeKind::Removed, detail)
                }
                Step::Add { lane, on, note } => {
                    let id = lane.id.clone();
                    let prefix = lane.prefix.clone();
                    inner.lanes.push(Slot::new(lane, note.clone()));
                    let slot = inner.lanes.len() - 1;
                    if on {
                        let qidx = inner.queue.add_lane(prefix);
                        inner.enabled.push(slot);
                        inner.lanes[slot].qidx = Some(qidx);
                        self.spawn_lane(&mut inner, slot, generation, &config);
                        (id, LaneChangeKind::Added, "starting".to_string())
                    } else {
                        (
                            id,
                            LaneChangeKind::Added,
                            format!("not started: {}", note.unwrap_or_default()),
                        )
                    }
                }
            };
            tracing::info!(lane = %id, change = change.as_str(), %detail, "reload");
            lanes.push(LaneChange { id, change, detail });
        }
        inner.fail_unserved();
        // A waiting lane whose prefix has no lane restarting any more (it was removed
        // by this reload) takes its turn now.
        let waiting: Vec<String> = inner
            .lanes
            .iter()
            .filter(|s| s.turn_waits)
            .map(|s| s.lane.prefix.clone())
            .collect();
        for prefix in waiting {
            Self::next_turn(&mut inner, &prefix);
        }
        for setting in &settings {
            tracing::info!(
                setting = %setting.name,
                applies = setting.applies.as_str(),
                "reload: {}",
                setting.detail
            );
        }
        inner.status_changed = true;
        self.pump(&mut inner);
        Ok(ReloadReport {
            config: shown_path,
            applied: true,
            lanes,
            settings,
        })
    }

    /// Takes a lane out to restart with its new settings (`next`): it finishes its
    /// current request (within `grace`), then its worker exits and `lane_left` starts it
    /// again. Says when, for the report.
    fn begin_restart(
        inner: &mut Inner,
        slot: usize,
        qidx: LaneIdx,
        grace: Duration,
    ) -> &'static str {
        inner.lanes[slot].turn_waits = false;
        let busy = inner.queue.lane_request(qidx).is_some();
        inner.queue.lane_leave(qidx, Leaving::Restart);
        inner.tell_lane(qidx, LaneCmd::Shutdown { grace });
        if busy {
            "restarts with them after its current request"
        } else {
            "restarting with them"
        }
    }

    /// The next lane of `prefix` whose restart waited for its turn begins it, when no
    /// other lane of the prefix is restarting.
    pub(super) fn next_turn(inner: &mut Inner, prefix: &str) {
        let waiting = inner
            .lanes
            .iter()
            .position(|s| s.turn_waits && s.lane.prefix == prefix && s.is_alive());
        let Some(slot) = waiting else { return };
        let Some(qidx) = inner.lanes[slot].qidx else {
            return;
        };
        if inner.restarting_in(prefix, slot) {
            return;
        }
        let grace = inner.config.deadlines().total;
        let s = &mut inner.lanes[slot];
        tracing::info!(lane = %s.lane.id, "its turn: restarting with its new settings");
        if let Some(note) = &mut s.note {
            *note = note.replace(&in_turn(prefix), "restarts after its current request");
        }
        Self::begin_restart(inner, slot, qidx, grace);
    }
}

/// What a lane waiting for its restart's turn says.
fn in_turn(prefix: &str) -> String {
    format!("restarts in turn, once the lane of {prefix} ahead of it is back")
}

impl Inner {
    /// Whether a lane of `prefix` other than `slot` is restarting for a reload: taken
    /// out to restart, starting again, or waiting for its turn.
    fn restarting_in(&self, prefix: &str, slot: usize) -> bool {
        self.lanes.iter().enumerate().any(|(i, s)| {
            let leaving = s
                .qidx
                .is_some_and(|q| self.queue.is_leaving(q) && !self.queue.is_removed(q));
            i != slot
                && !s.retired
                && s.lane.prefix == prefix
                && s.qidx.is_some()
                && (s.turn_waits
                    || leaving
                    || (s.next.is_none() && s.state == LaneState::Starting && s.is_alive()))
        })
    }
}
