//! `prq reload` and SIGHUP: what a new config changes, lane by lane.
//!
//! [`plan`] compares the lanes running now with the lanes a new config asks for and
//! says what to do with each — keep it, restart it with new settings after its
//! current request, start it, drain and stop it — without touching anything; the
//! runtime (`runtime.rs`) carries the plan out. A lane is the same lane across a
//! reload when its provider, prefix and account are the same (its browser profile),
//! so removing one account of six leaves the other five alone, and kept lanes keep
//! their IDs.

use prq_protocol::control::{Applies, SettingChange};
use prq_protocol::worker::LaneSpec;

use crate::config::{Config, Lane};

/// A lane as it runs now.
pub struct Current {
    /// Its slot in the runtime.
    pub slot: usize,
    pub lane: Lane,
    /// Whether it serves requests (started and not taken out).
    pub on: bool,
    pub spec: LaneSpec,
}

/// A lane the new config asks for.
pub struct Wanted {
    pub lane: Lane,
    /// Whether the new mode runs it (`concurrent` runs one lane per prefix).
    pub on: bool,
    /// Why it does not run, when it does not.
    pub note: Option<String>,
}

/// What to do with one lane.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Same lane, same settings (its note may change).
    Keep {
        slot: usize,
        lane: Lane,
        note: Option<String>,
    },
    /// Same lane, new settings that apply to it as it runs (`changed` names them).
    Update {
        slot: usize,
        lane: Lane,
        changed: Vec<&'static str>,
    },
    /// Same lane, new settings (`changed` names them): restart it once its current
    /// request ends.
    Restart {
        slot: usize,
        lane: Lane,
        changed: Vec<&'static str>,
    },
    /// A lane that did not run and now does.
    Start { slot: usize, lane: Lane },
    /// A lane that ran and no longer does, but stays listed (with why).
    Stop { slot: usize, note: Option<String> },
    /// Not in the new config: drain it, then it is gone.
    Remove { slot: usize },
    /// New in the config.
    Add {
        lane: Lane,
        on: bool,
        note: Option<String>,
    },
}

/// The steps from `current` to `wanted`. `spec` gives a lane's worker settings under the
/// new config; a kept lane whose settings differ from `current`'s is restarted. Added
/// lanes get IDs that no current lane has, nor any in `draining` (lanes an earlier
/// reload removed that have not stopped yet), so no two listed lanes share one.
pub fn plan(
    current: &[Current],
    draining: Vec<String>,
    wanted: Vec<Wanted>,
    spec: impl Fn(&Lane) -> LaneSpec,
) -> Vec<Step> {
    let mut matched = vec![false; current.len()];
    let mut taken_ids = draining;
    taken_ids.extend(current.iter().map(|c| c.lane.id.clone()));
    let mut steps = Vec::new();
    let mut added = Vec::new();
    for w in wanted {
        let found = current
            .iter()
            .enumerate()
            .find(|(i, c)| !matched[*i] && same_account(&c.lane, &w.lane));
        let Some((i, c)) = found else {
            added.push(w);
            continue;
        };
        matched[i] = true;
        let mut lane = w.lane;
        lane.id = c.lane.id.clone();
        let slot = c.slot;
        steps.push(match (c.on, w.on) {
            (true, true) => {
                let changed = spec_changes(&c.spec, &spec(&lane));
                if !changed.is_empty() {
                    Step::Restart {
                        slot,
                        lane,
                        changed,
                    }
                } else if c.lane.idle_suspend != lane.idle_suspend {
                    Step::Update {
                        slot,
                        lane,
                        changed: vec!["idle_suspend_s"],
                    }
                } else {
                    Step::Keep {
                        slot,
                        lane,
                        note: None,
                    }
                }
            }
            (false, true) => Step::Start { slot, lane },
            (true, false) => Step::Stop { slot, note: w.note },
            (false, false) => Step::Keep {
                slot,
                lane,
                note: w.note,
            },
        });
    }
    for (i, c) in current.iter().enumerate() {
        if !matched[i] {
            steps.push(Step::Remove { slot: c.slot });
        }
    }
    for w in added {
        let mut lane = w.lane;
        lane.id = free_id(&lane.prefix, &lane.id, &taken_ids);
        taken_ids.push(lane.id.clone());
        steps.push(Step::Add {
            lane,
            on: w.on,
            note: w.note,
        });
    }
    steps
}

/// The same account of the same site serving the same prefix: one browser profile.
fn same_account(a: &Lane, b: &Lane) -> bool {
    a.provider == b.provider && a.prefix == b.prefix && a.account == b.account
}

/// `wanted` (`<prefix>#<n>` from the config) unless a listed lane has it; else the
/// next free `<prefix>#<n>`.
fn free_id(prefix: &str, wanted: &str, taken: &[String]) -> String {
    if !taken.iter().any(|t| t == wanted) {
        return wanted.to_string();
    }
    (1..)
        .map(|n| format!("{prefix}#{n}"))
        .find(|id| !taken.contains(id))
        .unwrap_or_else(|| wanted.to_string())
}

/// The names of the worker settings that differ between two specs of one lane (the
/// reason it restarts). Values are not shown: a proxy URL may carry a password.
pub fn spec_changes(old: &LaneSpec, new: &LaneSpec) -> Vec<&'static str> {
    let (p, q) = (&old.presence, &new.presence);
    let fields = [
        ("base_url", old.base_url != new.base_url),
        ("browser", old.browser != new.browser),
        ("thinking", old.thinking_default != new.thinking_default),
        ("heartbeat_ms", old.heartbeat_ms != new.heartbeat_ms),
        (
            "heartbeat_timeout_ms",
            old.heartbeat_timeout_ms != new.heartbeat_timeout_ms,
        ),
        ("cdp_timeout_ms", old.cdp_timeout_ms != new.cdp_timeout_ms),
        ("selectors", old.selectors != new.selectors),
        ("user_agent", p.user_agent != q.user_agent),
        ("locale", p.locale != q.locale),
        ("timezone", p.timezone != q.timezone),
        ("proxy", p.proxy != q.proxy),
        ("headless", p.headless != q.headless),
        ("capture", old.capture_dir != new.capture_dir),
        (
            "browser_profile",
            old.browser_profile != new.browser_profile,
        ),
        ("after_reply", old.after_reply != new.after_reply),
    ];
    let mut out: Vec<_> = fields.iter().filter(|f| f.1).map(|f| f.0).collect();
    // Anything else of the spec (a field added later): still a reason to restart.
    if out.is_empty() && old != new {
        out.push("worker settings");
    }
    out
}

/// The daemon-wide settings a new config changes, each with how it takes effect, by
/// name only (some values are secrets). `boot` is the config the daemon started with:
/// what it took once at start is compared with that, so a change that waits for a
/// restart is reported again on each reload until the restart (or until it is put
/// back). `listen` is not among them: a reload refuses to move it.
pub fn changed_settings(boot: &Config, old: &Config, new: &Config) -> Vec<SettingChange> {
    let mut out = Vec::new();
    let mut push = |name: String, applies: Applies, detail: &str| {
        out.push(SettingChange {
            name,
            applies,
            detail: detail.to_string(),
        })
    };
    if old.mode != new.mode {
        push(
            format!("mode: {} → {}", old.mode.as_str(), new.mode.as_str()),
            Applies::Now,
            "lanes start or stop to match (see the lanes)",
        );
    }
    // Debug forms compare whole tables and floats alike.
    fn differs(a: &impl std::fmt::Debug, b: &impl std::fmt::Debug) -> bool {
        format!("{a:?}") != format!("{b:?}")
    }
    macro_rules! each {
        ($from:ident, $applies:expr, $detail:expr; $($($field:ident).+),+) => {$(
            if differs(&$from.$($field).+, &new.$($field).+) {
                push(stringify!($($field).+).replace(' ', ""), $applies, $detail);
            }
        )+};
    }
    let now = Applies::Now;
    each!(old, now, "applies to lanes started from now on"; start_timeout_s);
    each!(old, now, "applies from the next lane crash on";
        on_lane_crash, restart_limit, restart_window_s);
    each!(old, now, "applies to the next drain or stop"; shutdown_grace_s, drain_s);
    each!(old, now, "applies to admissions from now on; requests already waiting stay";
        max_pending);
    each!(old, now, "applies to responses started from now on"; keep_alive_s, tool_retries);
    each!(old, now, "applies now, to the requests already admitted too"; deadlines);
    each!(old, now, "applies to requests from now on";
        limits.max_body_bytes, limits.max_messages, limits.max_prompt_chars,
        limits.max_concurrent_per_client, limits.body_timeout_s,
        limits.client_buffer_bytes, keys, admin_key, admin_key_file, allow, attachments);
    each!(old, now, "applies to the next rate limit; a lane cooling now keeps its time";
        accounts.cooldown_s, accounts.cooldown_max_s);
    each!(old, now, "applies to requests admitted from now on"; accounts.wait_for_cooldown);
    each!(old, now, "applies to login views opened from now on; one open now stays open";
        panel.remote_login);
    each!(old, Applies::LaneRestart,
        "part of every lane's worker: each running lane restarts with it after its current request";
        browser, heartbeat_ms, heartbeat_timeout_ms, cdp_timeout_ms);
    // Defaults of each lane's own key: the lanes that take them say what changed.
    each!(old, Applies::LaneRestart, "the lanes that take it restart with it (see the lanes)";
        browser_profile);
    let idle = |c: &Config| c.idle_suspend_s.as_ref().map(|s| *s.get_ref());
    if idle(old) != idle(new) {
        push(
            "idle_suspend_s".into(),
            Applies::Now,
            "applies to each lane that takes it from its next idle time, with no restart (see the lanes)",
        );
    }
    each!(boot, Applies::DaemonRestart,
        "the HTTP listener took it as the daemon started: it applies after `prq stop` and `prq start`";
        limits.max_connections, limits.header_timeout_s, limits.keep_alive_idle_s);
    each!(boot, Applies::DaemonRestart,
        "the log files and their format are set up as the daemon starts: it applies after `prq stop` and `prq start`";
        logs.max_bytes, logs.keep, logs.format);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lane(prefix: &str, account: &str, n: usize) -> Lane {
        let text = format!(
            "[[lanes]]
provider = \"sandbox\"
prefix = \"{prefix}\"
account = \"{account}\"
"
        );
        let mut lane = Config::parse(&text).unwrap().lanes().remove(0);
        lane.id = format!("{prefix}#{n}");
        lane
    }

    /// The lane's worker settings, as the runtime makes them (the home is not read).
    fn spec(lane: &Lane) -> LaneSpec {
        let home = crate::home::Home::at("/nonexistent/prq-home");
        lane.spec(&Config::builtin(), &home, None)
    }

    fn running(slot: usize, lane: Lane) -> Current {
        Current {
            slot,
            spec: spec(&lane),
            lane,
            on: true,
        }
    }

    fn wanted(lane: Lane) -> Wanted {
        Wanted {
            lane,
            on: true,
            note: None,
        }
    }

    #[test]
    fn lanes_are_kept_restarted_removed_and_added_by_account() {
        let current = vec![
            running(0, lane("ds", "a", 1)),
            running(1, lane("ds", "b", 2)),
            running(2, lane("ds", "c", 3)),
            running(3, lane("x", "d", 1)),
        ];
        // Account a goes; b is renumbered by the config (ds#1) but keeps its ID; c
        // changes a setting; d stays; e and f are new.
        let mut c = lane("ds", "c", 2);
        c.thinking = true;
        let steps = plan(
            &current,
            vec!["x#2".into()],
            vec![
                wanted(lane("ds", "b", 1)),
                wanted(c.clone()),
                wanted(lane("x", "d", 1)),
                wanted(lane("ds", "e", 3)),
                wanted(lane("x", "f", 2)),
            ],
            spec,
        );
        c.id = "ds#3".into();
        assert_eq!(
            steps,
            vec![
                Step::Keep {
                    slot: 1,
                    lane: lane("ds", "b", 2),
                    note: None
                },
                Step::Restart {
                    slot: 2,
                    lane: c,
                    changed: vec!["thinking"]
                },
                Step::Keep {
                    slot: 3,
                    lane: lane("x", "d", 1),
                    note: None
                },
                Step::Remove { slot: 0 },
                // ds#1 still drains (account a): e takes the next free ID.
                Step::Add {
                    lane: lane("ds", "e", 4),
                    on: true,
                    note: None
                },
                // x#2 drains from an earlier reload.
                Step::Add {
                    lane: lane("x", "f", 3),
                    on: true,
                    note: None
                },
            ]
        );
    }

    #[test]
    fn a_lane_the_new_mode_does_not_run_is_stopped_and_one_it_runs_is_started() {
        let mut off = running(1, lane("ds", "b", 2));
        off.on = false;
        let current = vec![running(0, lane("ds", "a", 1)), off];
        let note = Some("not started: concurrent".to_string());
        let steps = plan(
            &current,
            Vec::new(),
            vec![
                Wanted {
                    lane: lane("ds", "a", 1),
                    on: false,
                    note: note.clone(),
                },
                wanted(lane("ds", "b", 2)),
            ],
            spec,
        );
        assert_eq!(
            steps,
            vec![
                Step::Stop { slot: 0, note },
                Step::Start {
                    slot: 1,
                    lane: lane("ds", "b", 2)
                },
            ]
        );
    }

    #[test]
    fn presence_settings_restart_the_lane_and_name_what_changed() {
        let current = vec![
            running(0, lane("ds", "a", 1)),
            running(1, lane("ds", "b", 2)),
        ];
        let text = "[[lanes]]
provider = \"sandbox\"
prefix = \"ds\"
account = \"a\"
user_agent = \"Mozilla/5.0 (X11; Linux x86_64) Test/1.0\"
locale = \"de-DE\"
timezone = \"Europe/Berlin\"
";
        let mut a = Config::parse(text).unwrap().lanes().remove(0);
        a.id = "ds#1".into();
        let steps = plan(
            &current,
            Vec::new(),
            vec![wanted(a.clone()), wanted(lane("ds", "b", 2))],
            spec,
        );
        assert_eq!(
            steps[0],
            Step::Restart {
                slot: 0,
                lane: a,
                changed: vec!["user_agent", "locale", "timezone"]
            }
        );
        assert!(matches!(steps[1], Step::Keep { slot: 1, .. }));
    }

    #[test]
    fn a_new_sleep_time_applies_without_a_restart_and_a_new_browser_profile_restarts() {
        let current = vec![
            running(0, lane("ds", "a", 1)),
            running(1, lane("ds", "b", 2)),
        ];
        let parsed = |extra: &str, account: &str, n: usize| {
            let text = format!(
                "[[lanes]]\nprovider = \"sandbox\"\nprefix = \"ds\"\naccount = \"{account}\"\n{extra}"
            );
            let mut l = Config::parse(&text).unwrap().lanes().remove(0);
            l.id = format!("ds#{n}");
            l
        };
        let a = parsed("idle_suspend_s = 300\n", "a", 1);
        let b = parsed("browser_profile = \"lean\"\n", "b", 2);
        let steps = plan(
            &current,
            Vec::new(),
            vec![wanted(a.clone()), wanted(b.clone())],
            spec,
        );
        assert_eq!(
            steps,
            vec![
                Step::Update {
                    slot: 0,
                    lane: a,
                    changed: vec!["idle_suspend_s"]
                },
                Step::Restart {
                    slot: 1,
                    lane: b,
                    changed: vec!["browser_profile"]
                },
            ]
        );
    }

    fn names(changes: &[SettingChange], applies: Applies) -> Vec<&str> {
        changes
            .iter()
            .filter(|c| c.applies == applies)
            .map(|c| c.name.as_str())
            .collect()
    }

    #[test]
    fn settings_are_named_without_their_values_with_how_each_applies() {
        let lanes = "[[lanes]]\nprovider = \"echo\"\n";
        let old = Config::parse(lanes).unwrap();
        let new = Config::parse(&format!(
            "mode = \"full\"\nadmin_key = \"s3cret-admin\"\ncdp_timeout_ms = 5000
[deadlines]\nidle_s = 5
[limits]\nmax_connections = 9\nclient_buffer_bytes = 4096
[accounts]\ncooldown_s = 7
[logs]\nkeep = 2\n{lanes}"
        ))
        .unwrap();
        let changed = changed_settings(&old, &old, &new);
        assert_eq!(
            names(&changed, Applies::Now),
            [
                "mode: concurrent → full",
                "deadlines",
                "limits.client_buffer_bytes",
                "admin_key",
                "accounts.cooldown_s"
            ]
        );
        assert_eq!(names(&changed, Applies::LaneRestart), ["cdp_timeout_ms"]);
        assert_eq!(
            names(&changed, Applies::DaemonRestart),
            ["limits.max_connections", "logs.keep"]
        );
        let text = format!("{changed:?}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(changed_settings(&old, &old, &old).is_empty());
        // What waits for a restart is said again on the next reload (compared with
        // the daemon's start), and not once it is put back.
        let again = changed_settings(&old, &new, &new);
        assert_eq!(
            names(&again, Applies::DaemonRestart),
            ["limits.max_connections", "logs.keep"]
        );
        assert!(names(&again, Applies::Now).is_empty());
        let back = changed_settings(&old, &new, &old);
        assert!(names(&back, Applies::DaemonRestart).is_empty());
    }

    /// Every key of the config is in [`changed_settings`] or is `listen` or `lanes`:
    /// this stops compiling when a key is added, so that its reload behaviour is
    /// decided there too.
    #[test]
    fn every_setting_has_a_reload_rule() {
        use crate::config::{AccountsConfig, LimitsConfig};
        use crate::logs::LogsConfig;
        let c = Config::builtin();
        let Config {
            listen: _,
            lanes: _,
            mode: _,
            browser: _,
            browser_profile: _,
            idle_suspend_s: _,
            start_timeout_s: _,
            heartbeat_ms: _,
            heartbeat_timeout_ms: _,
            cdp_timeout_ms: _,
            on_lane_crash: _,
            restart_limit: _,
            restart_window_s: _,
            shutdown_grace_s: _,
            drain_s: _,
            max_pending: _,
            keep_alive_s: _,
            tool_retries: _,
            deadlines: _,
            limits,
            accounts,
            logs,
            keys: _,
            admin_key: _,
            admin_key_file: _,
            allow: _,
            panel,
            attachments: _,
        } = c;
        let crate::config::PanelConfig { remote_login: _ } = panel;
        let LimitsConfig {
            max_body_bytes: _,
            max_messages: _,
            max_prompt_chars: _,
            max_concurrent_per_client: _,
            max_connections: _,
            header_timeout_s: _,
            keep_alive_idle_s: _,
            body_timeout_s: _,
            client_buffer_bytes: _,
        } = limits;
        let AccountsConfig {
            cooldown_s: _,
            cooldown_max_s: _,
            wait_for_cooldown: _,
        } = accounts;
        let LogsConfig {
            max_bytes: _,
            keep: _,
            format: _,
        } = logs;
    }
}
