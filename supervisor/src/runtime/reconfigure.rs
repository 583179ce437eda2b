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
                    let s = &mut inner.lanes[slot];
                    let Some(qidx) = s.qidx else {
                        // The planner restarts only running lanes; nothing to do.
                        continue;
                    };
                    let when = if s.is_alive() {
                        s.next = Some(lane);
                        s.note = Some(format!(
                            "{changed} changed by a reload: restarts after its current request"
                        ));
                        let busy = inner.queue.lane_request(qidx).is_some();
                        inner.queue.lane_leave(qidx, Leaving::Restart);
                        inner.tell_lane(qidx, LaneCmd::Shutdown { grace });
                        if busy {
                            "restarts with them after its current request"
                        } else {
                            "restarting with them"
                        }
                    } else {
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
}
