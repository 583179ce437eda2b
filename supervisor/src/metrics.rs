//! Counters and histograms for `GET /metrics`, in the Prometheus text format.
//!
//! They are fed from the queue's events, the one place every state change passes, so a
//! request is counted exactly once, when it ends.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use crate::queue::Entry;

/// Histogram bucket bounds, in seconds.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, d: Duration) {
        let v = d.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if v <= *bound {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += v;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        for (bound, count) in BUCKETS.iter().zip(self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(
            out,
            "{name}_sum{{{}}} {}",
            labels.trim_end_matches(','),
            self.sum
        );
        let _ = writeln!(
            out,
            "{name}_count{{{}}} {}",
            labels.trim_end_matches(','),
            self.count
        );
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    /// (prefix, outcome) → requests that ended so.
    outcomes: BTreeMap<(String, &'static str), u64>,
    queue_wait: BTreeMap<String, Histogram>,
    generation: BTreeMap<String, Histogram>,
    /// (HTTP status, reason) → requests refused before they were queued.
    rejected: BTreeMap<(u16, &'static str), u64>,
}

/// The live gauges, read at scrape time.
pub struct Gauges<'a> {
    pub pending_by_prefix: BTreeMap<&'a str, usize>,
    /// (lane id, prefix, state, processing 0/1)
    pub lanes: Vec<(&'a str, &'a str, &'static str, usize)>,
    /// (lane id, prefix, time left) of each cooling lane.
    pub cooling: Vec<(&'a str, &'a str, Duration)>,
    pub runtime_state: &'static str,
    /// What `GET /readyz` answers.
    pub ready: bool,
    /// Log lines lost since the daemon started.
    pub log_lines_dropped: u64,
}

impl Metrics {
    /// Records a request that reached a terminal state.
    pub fn ended(&mut self, e: &Entry) {
        debug_assert!(e.state.is_terminal());
        *self
            .outcomes
            .entry((e.prefix.clone(), e.state.as_str()))
            .or_default() += 1;
        if let Some(started) = e.started {
            self.queue_wait
                .entry(e.prefix.clone())
                .or_default()
                .observe(started - e.admitted);
            if let Some(ended) = e.ended {
                self.generation
                    .entry(e.prefix.clone())
                    .or_default()
                    .observe(ended - started);
            }
        } else if let Some(ended) = e.ended {
            // Never started: its whole life was waiting.
            self.queue_wait
                .entry(e.prefix.clone())
                .or_default()
                .observe(ended - e.admitted);
        }
    }

    /// Records a request refused before it was queued (queue full, per-client limit,
    /// body too large, not authorized or not allowed).
    pub fn rejected(&mut self, status: u16, reason: &'static str) {
        *self.rejected.entry((status, reason)).or_default() += 1;
    }

    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::new();
        out.push_str("# HELP prq_requests_total Requests that ended, by prefix and outcome.\n# TYPE prq_requests_total counter\n");
        for ((prefix, outcome), n) in &self.outcomes {
            let _ = writeln!(
                out,
                "prq_requests_total{{prefix=\"{prefix}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        out.push_str("# HELP prq_rejected_total Requests refused before they were queued, by status and reason.\n# TYPE prq_rejected_total counter\n");
        for ((status, reason), n) in &self.rejected {
            let _ = writeln!(
                out,
                "prq_rejected_total{{status=\"{status}\",reason=\"{reason}\"}} {n}"
            );
        }
        out.push_str("# HELP prq_queue_pending Requests waiting, by prefix.\n# TYPE prq_queue_pending gauge\n");
        for (prefix, n) in &gauges.pending_by_prefix {
            let _ = writeln!(out, "prq_queue_pending{{prefix=\"{prefix}\"}} {n}");
        }
        out.push_str("# HELP prq_lane_processing Requests generating on each lane (0 or 1).\n# TYPE prq_lane_processing gauge\n");
        for (lane, prefix, _, busy) in &gauges.lanes {
            let _ = writeln!(
                out,
                "prq_lane_processing{{lane=\"{lane}\",prefix=\"{prefix}\"}} {busy}"
            );
        }
        out.push_str("# HELP prq_lane_state Each lane's state (1 for the current one).\n# TYPE prq_lane_state gauge\n");
        for (lane, prefix, state, _) in &gauges.lanes {
            let _ = writeln!(
                out,
                "prq_lane_state{{lane=\"{lane}\",prefix=\"{prefix}\",state=\"{state}\"}} 1"
            );
        }
        out.push_str("# HELP prq_lane_cooling_seconds Time left before a rate-limited lane takes requests again.\n# TYPE prq_lane_cooling_seconds gauge\n");
        for (lane, prefix, left) in &gauges.cooling {
            let _ = writeln!(
                out,
                "prq_lane_cooling_seconds{{lane=\"{lane}\",prefix=\"{prefix}\"}} {:.3}",
                left.as_secs_f64()
            );
        }
        out.push_str("# HELP prq_runtime_running Whether the runtime is running.\n# TYPE prq_runtime_running gauge\n");
        let _ = writeln!(
            out,
            "prq_runtime_running{{state=\"{}\"}} {}",
            gauges.runtime_state,
            u8::from(gauges.runtime_state == "running")
        );
        out.push_str("# HELP prq_log_lines_dropped_total Log lines lost since the daemon started (a full disk, an unwritable logs/).\n# TYPE prq_log_lines_dropped_total counter\n");
        let _ = writeln!(
            out,
            "prq_log_lines_dropped_total {}",
            gauges.log_lines_dropped
        );
        out.push_str("# HELP prq_ready Whether this host takes requests (what GET /readyz answers: 1 = 200, 0 = 503).\n# TYPE prq_ready gauge\n");
        let _ = writeln!(out, "prq_ready {}", u8::from(gauges.ready));
        out.push_str("# HELP prq_queue_wait_seconds Time from admission to a lane taking the request.\n# TYPE prq_queue_wait_seconds histogram\n");
        for (prefix, h) in &self.queue_wait {
            h.render(
                &mut out,
                "prq_queue_wait_seconds",
                &format!("prefix=\"{prefix}\","),
            );
        }
        out.push_str("# HELP prq_generation_seconds Time from a lane taking the request to its end.\n# TYPE prq_generation_seconds histogram\n");
        for (prefix, h) in &self.generation {
            h.render(
                &mut out,
                "prq_generation_seconds",
                &format!("prefix=\"{prefix}\","),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{Meta, State};
    use tokio::time::Instant;

    #[test]
    fn an_ended_request_is_counted_once_with_its_times() {
        let t = Instant::now();
        let e = Entry {
            id: 1,
            prefix: "a".into(),
            meta: Meta::default(),
            state: State::Completed,
            lane: Some(0),
            stopping: None,
            deadline: None,
            error: None,
            admitted: t,
            started: Some(t + Duration::from_millis(20)),
            first_token: None,
            last_token: None,
            ended: Some(t + Duration::from_millis(320)),
            chars: 0,
        };
        let mut m = Metrics::default();
        m.ended(&e);
        m.rejected(429, "queue_full");
        m.rejected(429, "queue_full");
        m.rejected(401, "invalid_api_key");
        let text = m.render(&Gauges {
            pending_by_prefix: BTreeMap::from([("a", 2)]),
            lanes: vec![("a#1", "a", "busy", 1), ("a#2", "a", "cooling", 0)],
            cooling: vec![("a#2", "a", Duration::from_millis(41_500))],
            runtime_state: "running",
            ready: true,
            log_lines_dropped: 3,
        });
        assert!(
            text.contains("prq_lane_cooling_seconds{lane=\"a#2\",prefix=\"a\"} 41.500"),
            "{text}"
        );
        assert!(
            text.contains("prq_requests_total{prefix=\"a\",outcome=\"completed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("prq_queue_wait_seconds_bucket{prefix=\"a\",le=\"0.025\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("prq_queue_wait_seconds_bucket{prefix=\"a\",le=\"0.01\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("prq_generation_seconds_bucket{prefix=\"a\",le=\"0.5\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("prq_generation_seconds_count{prefix=\"a\"} 1"),
            "{text}"
        );
        assert!(text.contains("prq_queue_pending{prefix=\"a\"} 2"));
        assert!(text.contains("prq_lane_state{lane=\"a#1\",prefix=\"a\",state=\"busy\"} 1"));
        assert!(text.contains("prq_runtime_running{state=\"running\"} 1"));
        assert!(text.contains("prq_ready 1\n"), "{text}");
        assert!(text.contains("prq_log_lines_dropped_total 3\n"), "{text}");
        assert!(text.contains("prq_rejected_total{status=\"429\",reason=\"queue_full\"} 2"));
        assert!(text.contains("prq_rejected_total{status=\"401\",reason=\"invalid_api_key\"} 1"));
    }
}
