//! Keypad entry: digits gathered one key at a time until `#`, a full buffer, or a
//! pause. Shared by the agent and by Media Streams pipelines that hand digits to
//! an upstream model.

use std::time::Duration;

use tokio::time::Instant;

/// Most digits gathered into one entry.
pub const MAX_DIGITS: usize = 32;

/// Digits pressed so far and when they are due without another key.
#[derive(Debug, Clone)]
pub struct DigitBuffer {
    digits: String,
    due: Option<Instant>,
    pause: Duration,
}

impl DigitBuffer {
    /// An entry ends after `pause` without a key.
    pub fn new(pause: Duration) -> Self {
        Self {
            digits: String::new(),
            due: None,
            pause,
        }
    }

    /// Adds a key. Returns the whole entry when `digit` completes it (`#` or full);
    /// otherwise the entry is due `pause` from now.
    pub fn push(&mut self, digit: char) -> Option<String> {
        self.digits.push(digit);
        if digit == '#' || self.digits.len() >= MAX_DIGITS {
            return self.take();
        }
        self.due = Some(Instant::now() + self.pause);
        None
    }

    /// When the gathered digits are due (pass to [`sleep_until_opt`]).
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// Takes the gathered digits, if any (call when [`DigitBuffer::due`] has passed).
    pub fn take(&mut self) -> Option<String> {
        self.due = None;
        (!self.digits.is_empty()).then(|| std::mem::take(&mut self.digits))
    }
}

/// Sleeps until `at`, or forever when there is no deadline: a `select!` branch for
/// an optional timer.
pub async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn entries_end_with_hash_a_full_buffer_or_a_pause() {
        let mut keys = DigitBuffer::new(Duration::from_millis(1500));
        assert_eq!(keys.push('1'), None);
        assert_eq!(keys.push('2'), None);
        assert_eq!(keys.push('#'), Some("12#".into()));
        assert_eq!(keys.due(), None);

        assert_eq!(keys.push('7'), None);
        let due = keys.due().expect("a pending entry is due");
        sleep_until_opt(Some(due)).await;
        assert_eq!(keys.take(), Some("7".into()));
        assert_eq!(keys.take(), None);

        let full: Vec<_> = (0..MAX_DIGITS).map(|_| keys.push('5')).collect();
        assert!(full[..MAX_DIGITS - 1].iter().all(Option::is_none));
        assert_eq!(
            full[MAX_DIGITS - 1].as_deref().map(str::len),
            Some(MAX_DIGITS)
        );
    }
}
