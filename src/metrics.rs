//! Process-wide metrics, rendered at `GET /metrics` in the Prometheus text format:
//! live and total calls by transport mode, turns, interrupts, LLM errors by kind,
//! and two latency histograms (caller's prompt in → first token out, and the LLM's
//! own first-token latency), whose difference is the latency the server adds.
//!
//! Shared by every transport through `Arc<Metrics>`; lock-free (plain atomics), so
//! recording costs a few nanoseconds on the call's hot path. Calls are counted by
//! the transport's session; turns, interrupts, errors and latencies by the agent, so
//! every transport reports them the same way.
//!
//! May import nothing of voxrelay (the order is checked by `.ci/layers`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The transport carrying a call (the `mode` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallMode {
    /// ConversationRelay (`/websocket`): Twilio does speech.
    Relay,
    /// Media Streams (`/media-stream`): audio both ways.
    Stream,
    /// SIP (OpenAI answers the trunk; we drive the call over a sideband socket).
    Sip,
    /// The web console's "Try it" (ConversationRelay protocol from a browser).
    Console,
}

impl CallMode {
    pub const ALL: [CallMode; 4] = [
        CallMode::Relay,
        CallMode::Stream,
        CallMode::Sip,
        CallMode::Console,
    ];

    /// The label value, also used as `CallInfo::mode`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Relay => "relay",
            Self::Stream => "stream",
            Self::Sip => "sip",
            Self::Console => "console",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The kinds of LLM errors (`LlmError::kind`); anything else counts as `other`.
pub const LLM_ERROR_KINDS: [&str; 7] = [
    "http", "connect", "stream", "upstream", "timeout", "empty", "other",
];

/// How calls end (`voxrelay_call_endings_total{reason}`); anything else is `other`.
pub const ENDING_REASONS: [&str; 12] = [
    "caller-hangup",
    "voicemail",
    "fax",
    "end-call",
    "goodbye",
    "silence",
    "max-duration",
    "live-agent-handoff",
    "api-end",
    "server-shutdown",
    "failed",
    "other",
];

/// Upper bounds of the latency histograms' buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A Prometheus histogram with [`LATENCY_BUCKETS`], lock-free.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Non-cumulative counts per bucket; the last slot is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, value: Duration) {
        let secs = value.as_secs_f64();
        let slot = LATENCY_BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(value.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0u64;
        for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        cumulative += self.buckets[LATENCY_BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}");
        // The count matches the +Inf bucket even if an observation lands mid-render.
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

/// Counters and histograms since the process started.
#[derive(Debug, Default)]
pub struct Metrics {
    active_calls: [AtomicU64; CallMode::ALL.len()],
    total_calls: [AtomicU64; CallMode::ALL.len()],
    turns: AtomicU64,
    interrupts: AtomicU64,
    llm_errors: [AtomicU64; LLM_ERROR_KINDS.len()],
    endings: [AtomicU64; ENDING_REASONS.len()],
    refused: AtomicU64,
    /// Caller's prompt in → first token of the reply out.
    pub time_to_first_token: Histogram,
    /// LLM request start → first token back from the LLM.
    pub llm_first_token: Histogram,
}

/// Holds a call as active until dropped.
#[derive(Debug)]
pub struct CallGuard<'a> {
    metrics: &'a Metrics,
    mode: CallMode,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        self.metrics.active_calls[self.mode.index()].fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    /// Counts a call as started; it stays active while the guard lives.
    pub fn call_started(&self, mode: CallMode) -> CallGuard<'_> {
        self.active_calls[mode.index()].fetch_add(1, Ordering::Relaxed);
        self.total_calls[mode.index()].fetch_add(1, Ordering::Relaxed);
        CallGuard {
            metrics: self,
            mode,
        }
    }

    /// A reply was started.
    pub fn turn(&self) {
        self.turns.fetch_add(1, Ordering::Relaxed);
    }

    /// The caller talked over a reply.
    pub fn interrupt(&self) {
        self.interrupts.fetch_add(1, Ordering::Relaxed);
    }

    /// A reply failed; `kind` is `LlmError::kind()`.
    pub fn llm_error(&self, kind: &str) {
        let slot = LLM_ERROR_KINDS
            .iter()
            .position(|&k| k == kind)
            .unwrap_or(LLM_ERROR_KINDS.len() - 1);
        self.llm_errors[slot].fetch_add(1, Ordering::Relaxed);
    }

    /// Live calls on every transport.
    pub fn active_calls(&self) -> u64 {
        self.active_calls
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Counts a call's end under `reason` (one of [`ENDING_REASONS`]).
    pub fn call_ended(&self, reason: &str) {
        let slot = ENDING_REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(ENDING_REASONS.len() - 1);
        self.endings[slot].fetch_add(1, Ordering::Relaxed);
    }

    /// A call turned away before it was answered (the server was full).
    pub fn call_refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    pub fn refused_calls(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Calls that ended for `reason` since start.
    pub fn endings(&self, reason: &str) -> u64 {
        ENDING_REASONS
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |i| self.endings[i].load(Ordering::Relaxed))
    }

    /// Live calls on one transport.
    pub fn active_calls_in(&self, mode: CallMode) -> u64 {
        self.active_calls[mode.index()].load(Ordering::Relaxed)
    }

    /// Calls since start on every transport.
    pub fn total_calls(&self) -> u64 {
        self.total_calls
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    pub fn turns(&self) -> u64 {
        self.turns.load(Ordering::Relaxed)
    }

    pub fn interrupts(&self) -> u64 {
        self.interrupts.load(Ordering::Relaxed)
    }

    /// LLM errors of one kind.
    pub fn llm_errors(&self, kind: &str) -> u64 {
        LLM_ERROR_KINDS
            .iter()
            .position(|&k| k == kind)
            .map_or(0, |i| self.llm_errors[i].load(Ordering::Relaxed))
    }

    /// Everything in the Prometheus text exposition format (version 0.0.4).
    /// `draining` is the server's state, exported as a gauge.
    pub fn render(&self, draining: bool) -> String {
        let mut out = String::with_capacity(4096);
        let per_mode = |out: &mut String, name: &str, kind: &str, help: &str, v: &[AtomicU64]| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for mode in CallMode::ALL {
                let value = v[mode.index()].load(Ordering::Relaxed);
                let _ = writeln!(out, "{name}{{mode=\"{}\"}} {value}", mode.as_str());
            }
        };
        per_mode(
            &mut out,
            "voxrelay_active_calls",
            "gauge",
            "Calls in progress, by transport.",
            &self.active_calls,
        );
        per_mode(
            &mut out,
            "voxrelay_calls_total",
            "counter",
            "Calls accepted since start, by transport.",
            &self.total_calls,
        );
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {value}");
        };
        counter(
            &mut out,
            "voxrelay_turns_total",
            "Agent replies started.",
            self.turns(),
        );
        counter(
            &mut out,
            "voxrelay_interrupts_total",
            "Times the caller talked over a reply.",
            self.interrupts(),
        );
        counter(
            &mut out,
            "voxrelay_log_lines_dropped_total",
            "Log lines dropped because the log file could not keep up.",
            crate::telemetry::log_lines_dropped(),
        );
        let name = "voxrelay_llm_errors_total";
        let _ = writeln!(
            out,
            "# HELP {name} Failed LLM replies (the caller heard the fallback), by kind."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        for (i, kind) in LLM_ERROR_KINDS.iter().enumerate() {
            let value = self.llm_errors[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}{{kind=\"{kind}\"}} {value}");
        }
        let _ = writeln!(
            out,
            "# HELP voxrelay_calls_refused_total Calls turned away before they were answered (MAX_CALLS)."
        );
        let _ = writeln!(out, "# TYPE voxrelay_calls_refused_total counter");
        let _ = writeln!(out, "voxrelay_calls_refused_total {}", self.refused_calls());
        let name = "voxrelay_call_endings_total";
        let _ = writeln!(out, "# HELP {name} Calls ended, by how they ended.");
        let _ = writeln!(out, "# TYPE {name} counter");
        for (i, reason) in ENDING_REASONS.iter().enumerate() {
            let value = self.endings[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {value}");
        }
        self.time_to_first_token.render(
            &mut out,
            "voxrelay_time_to_first_token_seconds",
            "Caller's prompt in to the reply's first token out.",
        );
        self.llm_first_token.render(
            &mut out,
            "voxrelay_llm_first_token_seconds",
            "LLM request start to the LLM's first token.",
        );
        let _ = writeln!(
            out,
            "# HELP voxrelay_draining 1 while the server drains for shutdown."
        );
        let _ = writeln!(out, "# TYPE voxrelay_draining gauge");
        let _ = writeln!(out, "voxrelay_draining {}", u8::from(draining));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_counted_by_mode_while_the_guard_lives() {
        let m = Metrics::default();
        let guard = m.call_started(CallMode::Relay);
        assert_eq!(m.active_calls(), 1);
        drop(guard);
        assert_eq!(m.active_calls(), 0);
        assert_eq!(m.total_calls(), 1);
        let text = m.render(false);
        assert!(text.contains("voxrelay_calls_total{mode=\"relay\"} 1\n"));
        assert!(text.contains("voxrelay_calls_total{mode=\"stream\"} 0\n"));
        assert!(text.contains("voxrelay_active_calls{mode=\"relay\"} 0\n"));
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.time_to_first_token.observe(Duration::from_micros(300));
        m.time_to_first_token.observe(Duration::from_millis(3));
        m.time_to_first_token.observe(Duration::from_secs(60));
        let text = m.render(true);
        let line = |needle: &str| {
            text.lines()
                .find(|l| l.starts_with(needle))
                .unwrap_or_else(|| panic!("no {needle} in\n{text}"))
                .to_string()
        };
        let name = "voxrelay_time_to_first_token_seconds";
        assert_eq!(
            line(&format!("{name}_bucket{{le=\"0.00025\"}}")),
            format!("{name}_bucket{{le=\"0.00025\"}} 0")
        );
        assert!(line(&format!("{name}_bucket{{le=\"0.0005\"}}")).ends_with(" 1"));
        assert!(line(&format!("{name}_bucket{{le=\"0.005\"}}")).ends_with(" 2"));
        assert!(line(&format!("{name}_bucket{{le=\"10\"}}")).ends_with(" 2"));
        assert!(line(&format!("{name}_bucket{{le=\"+Inf\"}}")).ends_with(" 3"));
        assert!(line(&format!("{name}_count")).ends_with(" 3"));
        let sum: f64 = line(&format!("{name}_sum "))
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        assert!((sum - 60.0033).abs() < 1e-6, "{sum}");
        assert!(text.contains("voxrelay_draining 1\n"));
    }

    #[test]
    fn unknown_error_kinds_count_as_other() {
        let m = Metrics::default();
        m.llm_error("timeout");
        m.llm_error("something-new");
        assert_eq!(m.llm_errors("timeout"), 1);
        assert_eq!(m.llm_errors("other"), 1);
        assert!(
            m.render(false)
                .contains("voxrelay_llm_errors_total{kind=\"timeout\"} 1\n")
        );
    }
}
