//! The runtime's life: `prq start` (the lanes of the config, their workers and
//! browsers), a lane's restart, a stop, and the daemon's shutdown.

use prq_protocol::control::Started;

use super::*;

/// How `prq start` went.
pub enum StartReply {
    Started(Started),
    Failed(String),
}

impl Runtime {
    /// Starts every lane from the config as it is on disk now, and waits until each is
    /// ready or one has failed. A start already under way is waited for instead.
    pub async fn start(self: &Arc<Self>, config_path: Option<PathBuf>) -> StartReply {
        enum Next {
            Launch,
            WaitForDrain,
            WaitForStart,
            Refuse(String),
        }
        loop {
            let next = {
                let mut inner = self.lock();
                match inner.state {
                    RuntimeState::Stopped if inner.lanes.iter().all(|s| !s.is_alive()) => {
                        // Claim the start under the lock: one launch at a time.
                        inner.state = RuntimeState::Starting;
                        inner.reason = None;
                        Next::Launch
                    }
                    // Lanes of a stopped runtime may still be finishing what they generate.
                    RuntimeState::Stopped => Next::WaitForDrain,
                    RuntimeState::Draining => match self.call_off_drain(&mut inner) {
                        Ok(()) => return StartReply::Started(Started::DrainCalledOff),
                        Err(why) => Next::Refuse(why),
                    },
                    _ => Next::WaitForStart,
                }
            };
            match next {
                Next::Launch => break,
                Next::Refuse(why) => return StartReply::Failed(why),
                Next::WaitForDrain => {
                    let drained = self
                        .wait_for(DRAIN_GRACE, |i| i.lanes.iter().all(|s| !s.is_alive()))
                        .await;
                    if !drained {
                        return StartReply::Failed(
                            "lanes of the last runtime are still finishing".into(),
                        );
                    }
                }
                Next::WaitForStart => {
                    self.wait_for(Duration::MAX, |i| i.state != RuntimeState::Starting)
                        .await;
                    let inner = self.lock();
                    return match inner.state {
                        RuntimeState::Running => StartReply::Started(Started::AlreadyRunning),
                        _ => StartReply::Failed(inner.reason.clone().unwrap_or_default()),
                    };
                }
            }
        }
        self.bump();
        let path = config_path.or_else(|| self.lock().config_path.clone());
        let loaded = match &path {
            Some(p) => Config::load(p),
            None => Ok(Config::builtin()),
        };
        let loaded = loaded.and_then(|c| Ok((Access::from_config(&c)?, c)));
        let (access, config) = match loaded {
            Ok(pair) => pair,
            Err(e) => {
                let reason = format!("{e:#}");
                let mut inner = self.lock();
                inner.state = RuntimeState::Stopped;
                inner.reason = Some(reason.clone());
                drop(inner);
                self.bump();
                return StartReply::Failed(reason);
            }
        };
        let start_timeout = config.start_timeout();
        self.lock().access = Arc::new(access);
        self.launch(config, path);
        self.wait_for(start_timeout + Duration::from_secs(5), |i| {
            i.state != RuntimeState::Starting
        })
        .await;
        let inner = self.lock();
        match inner.state {
            // A drain can begin as soon as the lanes are up.
            RuntimeState::Running | RuntimeState::Draining => {
                StartReply::Started(Started::Launched)
            }
            RuntimeState::Stopped => StartReply::Failed(inner.reason.clone().unwrap_or_default()),
            RuntimeState::Starting => {
                StartReply::Failed("lanes did not become ready in time".into())
            }
        }
    }

    pub(super) fn launch(self: &Arc<Self>, config: Config, path: Option<PathBuf>) {
        let mut inner = self.lock();
        inner.generation += 1;
        let generation = inner.generation;
        inner.config_path = path;

        let all = config.lanes();
        let (notes, mode) = lanes_to_run(&config, &all);
        let enabled: Vec<usize> = (0..all.len()).filter(|&i| notes[i].is_none()).collect();
        let effective = mode.effective;
        inner.mode = mode;
        let prefixes = enabled.iter().map(|&i| all[i].prefix.clone()).collect();
        inner
            .queue
            .reset_lanes(effective, config.max_pending, config.deadlines(), prefixes);
        inner.queue.set_accounts(config.accounts.settings());
        inner.lanes = all
            .into_iter()
            .zip(notes)
            .map(|(lane, note)| Slot::new(lane, note))
            .collect();
        for (qidx, &slot_idx) in enabled.iter().enumerate() {
            inner.lanes[slot_idx].qidx = Some(qidx);
            self.spawn_lane(&mut inner, slot_idx, generation, &config);
        }
        inner.enabled = enabled;
        inner.config = Arc::new(config);
        inner.status_changed = true;
        tracing::info!(
            lanes = inner.enabled.len(),
            mode = effective.as_str(),
            "runtime starting"
        );
        drop(inner);
        self.bump();
    }

    pub(super) fn lane_spec(&self, config: &Config, lane: &Lane) -> LaneSpec {
        lane.spec(config, &self.home, self.urls.sandbox.clone())
    }

    /// `prq doctor`: has each running lane (of `prefix`) check its page (and with
    /// `type_check`, its typing), at once.
    pub async fn doctor(
        &self,
        prefix: Option<&str>,
        dir: &std::path::Path,
        type_check: bool,
    ) -> Vec<LaneDoctor> {
        let asked: Vec<_> = {
            let inner = self.lock();
            inner
                .lanes
                .iter()
                .filter(|s| prefix.is_none_or(|p| s.lane.prefix == p))
                .map(|s| {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let asked = s.cmd.as_ref().is_some_and(|cmd| {
                        cmd.send(LaneCmd::Doctor {
                            dir: dir.to_owned(),
                            type_check,
                            tx,
                        })
                        .is_ok()
                    });
                    let state = s.state;
                    (s.lane.clone(), asked.then_some(rx), state)
                })
                .collect()
        };
        let answers = asked.into_iter().map(|(lane, rx, state)| async move {
            let report = match rx {
                None => Err(format!(
                    "the lane is {} (not running); `prq start` starts it",
                    state.as_str()
                )),
                Some(rx) => match tokio::time::timeout(DOCTOR_DEADLINE, rx).await {
                    Ok(Ok(report)) => report,
                    Ok(Err(_)) => Err("the lane ended before it answered".into()),
                    Err(_) => Err(format!("no answer within {} s", DOCTOR_DEADLINE.as_secs())),
                },
            };
            LaneDoctor {
                id: lane.id,
                provider: lane.provider,
                prefix: lane.prefix,
                account: lane.account,
                report,
            }
        });
        futures::future::join_all(answers).await
    }

    /// Takes a running lane out of service for a reload: it finishes its current
    /// request (within `grace`), then stops. Says what happens, for the report.
    pub(super) fn take_out(&self, inner: &mut Inner, slot: usize, grace: Duration) -> String {
        let Some(qidx) = inner.lanes[slot].qidx else {
            return "was not running".into();
        };
        let busy = inner.queue.lane_request(qidx).is_some();
        inner.queue.lane_leave(qidx, Leaving::Removed);
        let s = &mut inner.lanes[slot];
        // A restart an earlier reload asked for is called off: it goes for good.
        s.next = None;
        s.turn_waits = false;
        if !s.is_alive() {
            return "stopped".into();
        }
        s.note = Some("removed by a reload: stops after its current request".into());
        inner.tell_lane(qidx, LaneCmd::Shutdown { grace });
        if busy {
            "stops after its current request".into()
        } else {
            "stopping".into()
        }
    }

    /// Starts a lost lane again (the `restart` policy), unless the runtime moved on.
    pub(super) fn respawn(self: &Arc<Self>, slot: usize, generation: u64) {
        let mut inner = self.lock();
        if inner.generation != generation
            || !matches!(inner.state, RuntimeState::Running | RuntimeState::Draining)
        {
            return;
        }
        // A reload may have started it already, or taken it out.
        let s = &inner.lanes[slot];
        if s.is_alive() || s.retired || s.qidx.is_some_and(|q| inner.queue.is_removed(q)) {
            return;
        }
        let config = inner.config.clone();
        self.spawn_lane(&mut inner, slot, generation, &config);
        inner.status_changed = true;
        self.pump(&mut inner);
    }

    pub(super) fn spawn_lane(
        self: &Arc<Self>,
        inner: &mut Inner,
        slot_idx: usize,
        generation: u64,
        config: &Config,
    ) {
        let spec = self.lane_spec(config, &inner.lanes[slot_idx].lane);
        // Its sleep setting, as this start (or a reload's restart) of it says.
        let s = &inner.lanes[slot_idx];
        if let Some(qidx) = s.qidx {
            let idle_suspend = s.lane.idle_suspend;
            inner.queue.set_idle_suspend(qidx, idle_suspend);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let slot = &mut inner.lanes[slot_idx];
        slot.state = LaneState::Starting;
        slot.cmd = Some(tx);
        tokio::spawn(lanes::run(
            lanes::LaneTask {
                runtime: self.clone(),
                registry: self.registry.clone(),
                home: self.home.clone(),
                slot: slot_idx,
                generation,
                spec,
                start_timeout: config.start_timeout(),
                heartbeat_timeout: Duration::from_millis(config.heartbeat_timeout_ms),
            },
            rx,
        ));
    }

    /// Marks the runtime stopped: pending requests fail, lanes finish what they are
    /// generating (within `grace`) and exit.
    pub(super) fn stop_runtime(&self, inner: &mut Inner, reason: String, grace: Duration) {
        inner.status_changed = true;
        // A drain under way ends here, whatever stopped the runtime.
        if let Some(drain) = inner.drain.take() {
            drain.call_off();
        }
        if inner.state != RuntimeState::Stopped {
            tracing::warn!(%reason, "runtime stopped");
            inner.state = RuntimeState::Stopped;
            inner.reason = Some(reason.clone());
        }
        for id in inner.queue.fail_pending(Instant::now()) {
            inner.end_job(
                id,
                End::Failed(Failed::RuntimeStopped {
                    reason: reason.clone(),
                }),
            );
        }
        for s in &mut inner.lanes {
            match &s.cmd {
                Some(cmd) => {
                    let _ = cmd.send(LaneCmd::Shutdown { grace });
                }
                // A lane waiting for its restart will not be started.
                None if s.state == LaneState::Starting => s.state = LaneState::Stopped,
                None => {}
            }
        }
    }

    /// Stops the runtime for `prq stop` and waits for every lane to exit.
    pub async fn shutdown(&self) {
        {
            let mut inner = self.lock();
            let grace = Duration::from_secs(inner.config.shutdown_grace_s);
            self.stop_runtime(&mut inner, "stopped by `prq stop`".into(), grace);
            self.pump(&mut inner);
        }
        let grace = Duration::from_secs(self.lock().config.shutdown_grace_s);
        let all_gone = grace + lanes::EXIT_GRACE * 3;
        if !self
            .wait_for(all_gone, |i| i.lanes.iter().all(|s| !s.is_alive()))
            .await
        {
            tracing::error!("lanes did not exit in time");
        }
    }
}

/// Which of a config's lanes run: `None` for each that does, else why not (`concurrent`
/// runs one lane per prefix); and the mode they run in (fewer than two lanes run
/// `serial`).
pub(super) fn lanes_to_run(config: &Config, all: &[Lane]) -> (Vec<Option<String>>, ModeStatus) {
    let mut notes = vec![None; all.len()];
    for (i, lane) in all.iter().enumerate() {
        let first_of_prefix = !all[..i].iter().any(|l| l.prefix == lane.prefix);
        if config.mode == Mode::Concurrent && !first_of_prefix {
            notes[i] = Some(format!(
                "not started: concurrent mode runs one lane per prefix ({}); set mode = \"full\" to use every account",
                lane.prefix
            ));
        }
    }
    let running = notes.iter().filter(|n| n.is_none()).count();
    let (effective, reason) = if running < 2 && config.mode != Mode::Serial {
        (
            Mode::Serial,
            Some(format!(
                "{running} lane(s) enabled: with fewer than two lanes, {} mode runs as serial",
                config.mode.as_str()
            )),
        )
    } else {
        (config.mode, None)
    };
    if let Some(reason) = &reason {
        tracing::info!("{reason}");
    }
    let mode = ModeStatus {
        configured: config.mode,
        effective,
        reason,
    };
    (notes, mode)
}
