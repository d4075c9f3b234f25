//! [`Alarm`]: one timer a session's `select!` loop keeps across turns. A fresh
//! `sleep_until` on every turn registers and removes a timer-wheel entry each time
//! the loop wakes (50 times a second per media call for caller audio alone); an
//! alarm is re-armed only when its deadline changes.

use std::pin::Pin;

use tokio::time::{Instant, Sleep};

pub struct Alarm {
    sleep: Pin<Box<Sleep>>,
    armed: Option<Instant>,
}

impl Default for Alarm {
    fn default() -> Self {
        Self::new()
    }
}

impl Alarm {
    /// An alarm that is not set.
    pub fn new() -> Self {
        Self {
            // Any instant: the sleep is only awaited once `set` armed it.
            sleep: Box::pin(tokio::time::sleep_until(Instant::now())),
            armed: None,
        }
    }

    /// Sets the alarm for `at`, or clears it with `None`.
    pub fn set(&mut self, at: Option<Instant>) {
        if at == self.armed {
            return;
        }
        if let Some(at) = at {
            self.sleep.as_mut().reset(at);
        }
        self.armed = at;
    }

    /// When the alarm is set for.
    pub fn at(&self) -> Option<Instant> {
        self.armed
    }

    /// Ready once the set time has come; never while the alarm is not set. It
    /// stays set: the caller sets the next time (or `None`).
    pub async fn ring(&mut self) {
        match self.armed {
            Some(_) => self.sleep.as_mut().await,
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn rings_at_the_time_set_and_follows_changes() {
        let mut alarm = Alarm::new();
        let start = Instant::now();
        assert!(
            tokio::time::timeout(Duration::from_secs(60), alarm.ring())
                .await
                .is_err(),
            "an alarm that is not set never rings"
        );
        let start2 = Instant::now();
        alarm.set(Some(start2 + Duration::from_millis(50)));
        alarm.set(Some(start2 + Duration::from_millis(20)));
        alarm.ring().await;
        assert_eq!(start2.elapsed(), Duration::from_millis(20));
        alarm.set(Some(start2 + Duration::from_millis(40)));
        alarm.ring().await;
        assert_eq!(start2.elapsed(), Duration::from_millis(40));
        alarm.set(None);
        assert_eq!(alarm.at(), None);
        assert!(start.elapsed() >= Duration::from_secs(60));
    }
}
