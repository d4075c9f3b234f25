//! The calls this process carries (ConversationRelay and Media Streams), by call
//! SID, so a command for a live call (end it, from the API; a voicemail, from
//! Twilio's detection) reaches the session that owns its socket:
//! directly when the call is here, through the store's notifications
//! (`Store::notify`, PostgreSQL `LISTEN/NOTIFY`) when another replica carries it.
//!
//! May import: nothing of HTTP; the session takes the receiving end.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

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
    sessions: Mutex<HashMap<String, (u64, mpsc::Sender<CallCommand>)>>,
    next: std::sync::atomic::AtomicU64,
}

/// A session's place in [`LiveCalls`]; removed when dropped (unless a later
/// session of the same call took it over).
pub struct Registration {
    calls: Arc<LiveCalls>,
    call_sid: String,
    id: u64,
    pub commands: mpsc::Receiver<CallCommand>,
}

impl LiveCalls {
    /// Registers the session now carrying `call_sid` (replacing an older one).
    pub fn register(self: &Arc<Self>, call_sid: &str) -> Registration {
        let (tx, rx) = mpsc::channel(4);
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.lock().insert(call_sid.to_string(), (id, tx));
        Registration {
            calls: self.clone(),
            call_sid: call_sid.to_string(),
            id,
            commands: rx,
        }
    }

    /// Hands `command` to the session carrying `call_sid` here; false when none is.
    pub fn command(&self, call_sid: &str, command: CallCommand) -> bool {
        let sender = self.lock().get(call_sid).map(|(_, tx)| tx.clone());
        sender.is_some_and(|tx| tx.try_send(command).is_ok())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, mpsc::Sender<CallCommand>)>> {
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

    #[tokio::test]
    async fn a_command_reaches_the_newest_session_of_a_call() {
        let live = Arc::new(LiveCalls::default());
        assert!(!live.command("CA1", CallCommand::End));
        let old = live.register("CA1");
        let mut new = live.register("CA1");
        drop(old);
        assert!(live.command("CA1", CallCommand::End));
        assert_eq!(new.commands.recv().await, Some(CallCommand::End));
        drop(new);
        assert!(!live.command("CA1", CallCommand::End));
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
