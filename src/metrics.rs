//! Process-wide counters: live and total calls, turns, interrupts, LLM errors.
//! Shared by every transport through `Arc<Metrics>`; lock-free.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters since the process started.
#[derive(Debug, Default)]
pub struct Metrics {
    active_calls: AtomicU64,
    total_calls: AtomicU64,
    turns: AtomicU64,
    interrupts: AtomicU64,
    llm_errors: AtomicU64,
}

/// Holds a call as active until dropped.
#[derive(Debug)]
pub struct CallGuard<'a> {
    metrics: &'a Metrics,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        self.metrics.active_calls.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    /// Counts a call as started; it stays active while the guard lives.
    pub fn call_started(&self) -> CallGuard<'_> {
        self.active_calls.fetch_add(1, Ordering::Relaxed);
        self.total_calls.fetch_add(1, Ordering::Relaxed);
        CallGuard { metrics: self }
    }

    pub fn record_call_end(&self, turns: u32, interrupts: u32, llm_errors: u32) {
        self.turns.fetch_add(turns.into(), Ordering::Relaxed);
        self.interrupts
            .fetch_add(interrupts.into(), Ordering::Relaxed);
        self.llm_errors
            .fetch_add(llm_errors.into(), Ordering::Relaxed);
    }

    pub fn active_calls(&self) -> u64 {
        self.active_calls.load(Ordering::Relaxed)
    }

    pub fn total_calls(&self) -> u64 {
        self.total_calls.load(Ordering::Relaxed)
    }
}
