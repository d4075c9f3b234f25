//! The calls this process carries (ConversationRelay and Media Streams), by call
//! SID, so a command for a live call (end it, from the API; a voicemail, from
//! Twilio's detection) reaches the session that owns its socket:
//! directly when the call is here, through the store's notifications
//! (`Store::notify`, PostgreSQL `LISTEN/NOTIFY`) when another replica carries it.
//!
//! May import: nothing of HTTP; the session takes the receiving end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use futures::task::AtomicWaker;

/// `reasonCode` of a call ended through the API.
pub const REASON_API_END: &str = "api-end";
/// `reasonCode` of a call a fax answered.
pub const REASON_FAX: &str = "fax";

/// What the API may ask of a live call's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallCommand {
    /// End the call now (ConversationRelay `end`, reason `api-end`).
    End,
    /// Twilio's answering-machine detection heard a voicemail greeting end: leave
    /// the agent's voicemail message and end.
    Voicemail,
    /// A fax answered: end at once (reason `fax`).
    Fax,
}

impl CallCommand {
    /// Ends the call at once: nothing that comes after it changes that.
    fn is_final(self) -> bool {
        matches!(self, CallCommand::End | CallCommand::Fax)
    }

    fn to_slot(self) -> u8 {
        match self {
            CallCommand::End => 1,
            CallCommand::Voicemail => 2,
            CallCommand::Fax => 3,
        }
    }

    fn from_slot(slot: u8) -> Option<Self> {
        match slot {
            1 => Some(CallCommand::End),
            2 => Some(CallCommand::Voicemail),
            3 => Some(CallCommand::Fax),
            _ => None,
        }
    }

    /// The notification payload carrying this command for `call_sid`.
    pub fn payload(self, call_sid: &str) -> String {
        let verb = match self {
            CallCommand::End => "end",
            CallCommand::Voicemail => "voicemail",
            CallCommand::Fax => "fax",
        };
        format!("{verb} {call_sid}")
    }

    /// Reads a notification payload.
    pub fn parse(payload: &str) -> Option<(CallCommand, &str)> {
        let (verb, sid) = payload.split_once(' ')?;
        if sid.is_empty() || sid.len() > 64 {
            return None;
        }
        let command = match verb {
            "end" => CallCommand::End,
            "voicemail" => CallCommand::Voicemail,
            "fax" => CallCommand::Fax,
            _ => return None,
        };
        Some((command, sid))
    }
}

/// Live sessions by call SID.
#[derive(Default)]
pub struct LiveCalls {
    sessions: Mutex<HashMap<String, (u64, Arc<Mailbox>)>>,
    next: AtomicU64,
}

/// One session's commands: the one not yet taken, and its wake-up. A session acts
/// on one command at a time and the next one either ends the call or replaces a
/// voicemail not yet acted on, so one slot is enough (a channel per call would
/// cost half a kilobyte of every call's memory). A final command (end, fax) in the
/// slot is never replaced. Only the session waits on it, so its wake-up is an
/// [`AtomicWaker`]: the session's loop polls it on every turn, and a `Notify`
/// took a lock to enter its list of waiters and another to leave it each time.
#[derive(Default)]
struct Mailbox {
    /// [`CallCommand::to_slot`], or 0 when empty.
    slot: AtomicU8,
    wake: AtomicWaker,
}

impl Mailbox {
    fn post(&self, command: CallCommand) {
        let _ = self
            .slot
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                match CallCommand::from_slot(current) {
                    Some(pending) if pending.is_final() => None,
                    _ => Some(command.to_slot()),
                }
            });
        self.wake.wake();
    }

    fn take(&self) -> Option<CallCommand> {
        CallCommand::from_slot(self.slot.swap(0, Ordering::AcqRel))
    }
}

/// A session's place in [`LiveCalls`]; removed when dropped (unless a later
/// session of the same call took it over).
pub struct Registration {
    calls: Arc<LiveCalls>,
    call_sid: String,
    id: u64,
    mailbox: Arc<Mailbox>,
}

impl Registration {
    /// Waits for the next command for this call. Cancel-safe: a command is taken
    /// only when this returns it.
    pub async fn next_command(&self) -> CallCommand {
        std::future::poll_fn(|cx| {
            if let Some(command) = self.mailbox.take() {
                return Poll::Ready(command);
            }
            self.mailbox.wake.register(cx.waker());
            // A command posted before the waker was in place woke nobody: look again.
            match self.mailbox.take() {
                Some(command) => Poll::Ready(command),
                None => Poll::Pending,
            }
        })
        .await
    }
}

/// A session's next command; pending while it has no registration (before its
/// call is known). For a `select!` branch.
pub async fn next_command(registration: &Option<Registration>) -> CallCommand {
    match registration {
        Some(r) => r.next_command().await,
        None => std::future::pending().await,
    }
}

impl LiveCalls {
    /// Registers the session now carrying `call_sid` (replacing an older one).
    pub fn register(self: &Arc<Self>, call_sid: &str) -> Registration {
        let mailbox = Arc::new(Mailbox::default());
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock()
            .insert(call_sid.to_string(), (id, mailbox.clone()));
        Registration {
            calls: self.clone(),
            call_sid: call_sid.to_string(),
            id,
            mailbox,
        }
    }

    /// Hands `command` to the session carrying `call_sid` here; false when none is.
    pub fn command(&self, call_sid: &str, command: CallCommand) -> bool {
        let Some(mailbox) = self.lock().get(call_sid).map(|(_, m)| m.clone()) else {
            return false;
        };
        mailbox.post(command);
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, Arc<Mailbox>)>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut sessions = self.calls.lock();
        if sessions
            .get(&self.call_sid)
            .is_some_and(|(id, _)| *id == self.id)
        {
            sessions.remove(&self.call_sid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_command_reaches_the_newest_session_of_a_call() {
        let live = Arc::new(LiveCalls::default());
        assert!(!live.command("CA1", CallCommand::End));
        let old = live.register("CA1");
        let new = live.register("CA1");
        drop(old);
        assert!(live.command("CA1", CallCommand::End));
        assert_eq!(new.next_command().await, CallCommand::End);
        drop(new);
        assert!(!live.command("CA1", CallCommand::End));
    }

    #[tokio::test]
    async fn a_final_command_is_never_replaced_and_a_voicemail_is() {
        let live = Arc::new(LiveCalls::default());
        let session = live.register("CA1");
        assert!(live.command("CA1", CallCommand::Voicemail));
        assert!(live.command("CA1", CallCommand::Fax));
        assert!(live.command("CA1", CallCommand::Voicemail));
        assert!(live.command("CA1", CallCommand::End));
        assert_eq!(session.next_command().await, CallCommand::Fax);
        // Taken: nothing is left, and the next command wakes the waiting session.
        let waiting = tokio::spawn(async move { session.next_command().await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        assert!(live.command("CA1", CallCommand::Voicemail));
        assert_eq!(waiting.await.unwrap(), CallCommand::Voicemail);
    }

    #[tokio::test]
    async fn a_wait_given_up_loses_no_command() {
        let live = Arc::new(LiveCalls::default());
        let session = live.register("CA1");
        // A `select!` drops the wait when another branch wins...
        let wait = tokio::time::timeout(Duration::from_millis(5), session.next_command());
        assert!(wait.await.is_err());
        // ...and the session, busy elsewhere, finds the command when it next looks.
        assert!(live.command("CA1", CallCommand::End));
        let found = tokio::time::timeout(Duration::from_secs(5), session.next_command());
        assert_eq!(found.await.unwrap(), CallCommand::End);
    }

    #[test]
    fn payloads_round_trip_and_junk_is_refused() {
        let payload = CallCommand::End.payload("CA1");
        assert_eq!(
            CallCommand::parse(&payload),
            Some((CallCommand::End, "CA1"))
        );
        assert_eq!(CallCommand::parse("end "), None);
        assert_eq!(CallCommand::parse("drop CA1"), None);
        assert_eq!(CallCommand::parse("end"), None);
    }
}
