//! Recently ended conversations, kept in memory by call SID so a call whose socket
//! dropped (Twilio error 64105, then a fresh `<Connect>`) and came back to this
//! replica resumes with everything it had (tool calls included). A cache: the
//! store holds every turn, and a call that lands on another replica (or after a
//! restart) is rebuilt from there ([`Resume::Transcript`]).
//!
//! Who may resume is decided by the transport before it asks (the reconnect token
//! of our own signed `64105` answer, or the store's record that we gave that
//! answer); this map only keeps conversations. Bounded in count, in bytes and in
//! age; the oldest go first.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::History;

/// What a resumed call needs of the conversation before the drop.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub history: History,
    /// Sequence number of the next transcript turn.
    pub next_seq: u32,
    /// The language switched to, if the call left the main one.
    pub language: Option<String>,
}

/// An earlier conversation of a call, for a session that picks it up.
#[derive(Debug, Clone)]
pub enum Resume {
    /// Kept in this process when the socket dropped (tool calls included).
    Snapshot(Snapshot),
    /// Rebuilt from the store's transcript (any replica, or after a restart): what
    /// each side said, in order, and the number of the next turn.
    Transcript {
        turns: Vec<(super::Speaker, String)>,
        next_seq: u32,
    },
}

/// Bytes of all kept conversations at most, unless set otherwise.
pub const DEFAULT_MAX_BYTES: usize = 32 * 1024 * 1024;

#[derive(Debug, Default)]
struct Entries {
    saved: HashMap<String, (Instant, usize, Snapshot)>,
    bytes: usize,
}

/// Recent conversations by call SID.
#[derive(Debug)]
pub struct RecentCalls {
    entries: Mutex<Entries>,
    capacity: usize,
    max_bytes: usize,
    ttl: Duration,
}

impl RecentCalls {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            entries: Mutex::new(Entries::default()),
            capacity,
            max_bytes: DEFAULT_MAX_BYTES,
            ttl,
        }
    }

    /// Keeps at most `max` bytes of conversations in all.
    pub fn with_max_bytes(mut self, max: usize) -> Self {
        self.max_bytes = max;
        self
    }

    /// Keeps `snapshot` for `ttl`, dropping expired entries and, when over the
    /// count or byte bound, the oldest.
    pub fn save(&self, call_sid: &str, snapshot: Snapshot) {
        let size = snapshot.history.total_bytes() + call_sid.len();
        if self.capacity == 0 || call_sid.is_empty() || size > self.max_bytes {
            return;
        }
        let now = Instant::now();
        let mut entries = self.lock();
        let entries = &mut *entries;
        // `bytes` is kept in step with every removal.
        let mut expired = 0;
        entries.saved.retain(|_, (at, b, _)| {
            let keep = now.duration_since(*at) < self.ttl;
            if !keep {
                expired += *b;
            }
            keep
        });
        entries.bytes -= expired;
        if let Some((_, b, _)) = entries.saved.remove(call_sid) {
            entries.bytes -= b;
        }
        while entries.saved.len() >= self.capacity || entries.bytes + size > self.max_bytes {
            let Some(oldest) = entries
                .saved
                .iter()
                .min_by_key(|(_, (at, _, _))| *at)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some((_, b, _)) = entries.saved.remove(&oldest) {
                entries.bytes -= b;
            }
        }
        entries.bytes += size;
        entries
            .saved
            .insert(call_sid.to_string(), (now, size, snapshot));
    }

    /// Takes the conversation of `call_sid` if it ended less than `ttl` ago.
    pub fn take(&self, call_sid: &str) -> Option<Snapshot> {
        let mut entries = self.lock();
        let (at, size, snapshot) = entries.saved.remove(call_sid)?;
        entries.bytes -= size;
        (at.elapsed() < self.ttl).then_some(snapshot)
    }

    pub fn len(&self) -> usize {
        self.lock().saved.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the conversations kept.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(n: u32) -> Snapshot {
        Snapshot {
            history: History::new("sys"),
            next_seq: n,
            language: None,
        }
    }

    #[test]
    fn bounded_in_count_oldest_first_and_taken_once() {
        let recent = RecentCalls::new(2, Duration::from_secs(60));
        recent.save("CA1", snap(1));
        recent.save("CA2", snap(2));
        recent.save("CA3", snap(3));
        assert_eq!(recent.len(), 2);
        assert!(recent.take("CA1").is_none());
        assert_eq!(recent.take("CA3").unwrap().next_seq, 3);
        assert!(recent.take("CA3").is_none());
    }

    #[test]
    fn bounded_in_bytes() {
        let recent = RecentCalls::new(1000, Duration::from_secs(60)).with_max_bytes(10_000);
        for i in 0..100 {
            let mut s = snap(i);
            s.history
                .push(crate::llm::ChatMessage::user("x".repeat(3000)));
            recent.save(&format!("CA{i}"), s);
            assert!(recent.bytes() <= 10_000);
        }
        assert_eq!(recent.len(), 3);
        assert!(recent.take("CA99").is_some());
    }

    #[test]
    fn expired_entries_are_not_resumed() {
        let recent = RecentCalls::new(10, Duration::from_millis(1));
        recent.save("CA1", snap(1));
        std::thread::sleep(Duration::from_millis(5));
        assert!(recent.take("CA1").is_none());
    }
}
