//! Recently ended conversations, kept in memory by call SID so a call whose socket
//! dropped (Twilio error 64105, then a fresh `<Connect>`) resumes where it was
//! instead of starting over. Bounded in count and in age; the oldest go first.

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

/// Recent conversations by call SID.
#[derive(Debug)]
pub struct RecentCalls {
    entries: Mutex<HashMap<String, (Instant, Snapshot)>>,
    capacity: usize,
    ttl: Duration,
}

impl RecentCalls {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity,
            ttl,
        }
    }

    /// Keeps `snapshot` for `ttl`, dropping expired entries and, when full, the oldest.
    pub fn save(&self, call_sid: &str, snapshot: Snapshot) {
        if self.capacity == 0 || call_sid.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, (at, _)| now.duration_since(*at) < self.ttl);
        while entries.len() >= self.capacity && !entries.contains_key(call_sid) {
            let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            entries.remove(&oldest);
        }
        entries.insert(call_sid.to_string(), (now, snapshot));
    }

    /// Takes the conversation of `call_sid` if it ended less than `ttl` ago.
    pub fn take(&self, call_sid: &str) -> Option<Snapshot> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (at, snapshot) = entries.remove(call_sid)?;
        (at.elapsed() < self.ttl).then_some(snapshot)
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
    fn expired_entries_are_not_resumed() {
        let recent = RecentCalls::new(10, Duration::from_millis(1));
        recent.save("CA1", snap(1));
        std::thread::sleep(Duration::from_millis(5));
        assert!(recent.take("CA1").is_none());
    }
}
