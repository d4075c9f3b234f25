//! Recently ended conversations, kept in memory by call SID so a call whose socket
//! dropped (Twilio error 64105, then a fresh `<Connect>`) resumes where it was
//! instead of starting over.
//!
//! A conversation is handed out only for a reconnect the server itself answered:
//! the signed `/twiml/action` with `ErrorCode=64105` for that SID arms it
//! ([`RecentCalls::arm`]); a session that merely claims the SID gets nothing.
//! Bounded in count, in bytes and in age; the oldest go first.

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

/// Bytes of all kept conversations at most, unless set otherwise.
pub const DEFAULT_MAX_BYTES: usize = 32 * 1024 * 1024;

#[derive(Debug, Default)]
struct Entries {
    saved: HashMap<String, (Instant, usize, Snapshot)>,
    bytes: usize,
    /// Calls whose reconnect we answered, and when.
    armed: HashMap<String, Instant>,
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
        entries
            .armed
            .retain(|_, at| now.duration_since(*at) < self.ttl);
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

    /// Allows one resume of `call_sid`: we answered its reconnect.
    pub fn arm(&self, call_sid: &str) {
        if call_sid.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut entries = self.lock();
        entries
            .armed
            .retain(|_, at| now.duration_since(*at) < self.ttl);
        if entries.armed.len() < self.capacity {
            entries.armed.insert(call_sid.to_string(), now);
        }
    }

    /// Takes the conversation of `call_sid` if it ended less than `ttl` ago and
    /// its reconnect was armed.
    pub fn take(&self, call_sid: &str) -> Option<Snapshot> {
        let mut entries = self.lock();
        let armed = entries.armed.remove(call_sid)?;
        if armed.elapsed() >= self.ttl {
            return None;
        }
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

    fn armed(recent: &RecentCalls, sid: &str) -> Option<Snapshot> {
        recent.arm(sid);
        recent.take(sid)
    }

    #[test]
    fn bounded_in_count_oldest_first_and_taken_once() {
        let recent = RecentCalls::new(2, Duration::from_secs(60));
        recent.save("CA1", snap(1));
        recent.save("CA2", snap(2));
        recent.save("CA3", snap(3));
        assert_eq!(recent.len(), 2);
        assert!(armed(&recent, "CA1").is_none());
        assert_eq!(armed(&recent, "CA3").unwrap().next_seq, 3);
        assert!(armed(&recent, "CA3").is_none());
    }

    #[test]
    fn only_an_armed_reconnect_takes_a_conversation() {
        let recent = RecentCalls::new(10, Duration::from_secs(60));
        recent.save("CA1", snap(1));
        assert!(recent.take("CA1").is_none(), "a mere claim of the SID");
        assert_eq!(armed(&recent, "CA1").unwrap().next_seq, 1);
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
        assert!(armed(&recent, "CA99").is_some());
    }

    #[test]
    fn expired_entries_are_not_resumed() {
        let recent = RecentCalls::new(10, Duration::from_millis(1));
        recent.save("CA1", snap(1));
        std::thread::sleep(Duration::from_millis(5));
        assert!(armed(&recent, "CA1").is_none());
    }
}
