//! Durable call records: the [`Store`] trait, the rows it keeps, and [`open`], which
//! picks the backend from `DATABASE_URL` (SQLite file by default, PostgreSQL for
//! `postgres://…`) and applies the schema migrations in `migrations/`.
//!
//! The store knows nothing about calls in progress or transports: the agent's
//! records reach it through `crate::recorder`, which queues them off the call's path.
//! Times are milliseconds since the Unix epoch (UTC).
//!
//! May import nothing of voxrelay but its own submodules: everything else imports
//! the store (the order is checked by `.ci/layers`).

mod backend;
pub mod batch;
mod migrations;
pub mod postgres;
pub mod shared;
mod sql;
pub mod sqlite;
mod writes;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use serde::Serialize;

pub use shared::SharedState;

/// Milliseconds since the Unix epoch (UTC).
pub type Millis = i64;

/// `time` as [`Millis`] (0 before 1970).
pub fn millis(time: SystemTime) -> Millis {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// The current time as [`Millis`].
pub fn now_millis() -> Millis {
    millis(SystemTime::now())
}

/// Why the store could not do something.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot apply the schema migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create the database directory {path}: {source}")]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("unsupported DATABASE_URL (expected sqlite: or postgres://)")]
    UnsupportedUrl,
}

/// The next free sequence numbers of a call's records ([`Store::next_seqs`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NextSeqs {
    pub tool_call: i64,
    pub appointment: i64,
    pub turn: i64,
}

/// A call as it connects (the agent's `call_started`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewCall {
    pub call_sid: String,
    pub session_id: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub direction: Option<String>,
    /// `relay` or `stream`.
    pub mode: Option<String>,
    /// The agent that took the call (`default` or an `AGENTS_DIR` file's name).
    pub agent: Option<String>,
    /// The TwiML `<Parameter>`s as a JSON object.
    pub parameters: Option<String>,
    pub started_at: Millis,
    /// The replica whose socket carries the call.
    pub owner: Option<String>,
}

/// How a call ended (the agent's `call_ended`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallEnd {
    pub status: String,
    pub ended_at: Millis,
    pub handoff_data: Option<String>,
    pub turns: i64,
    pub interrupts: i64,
    pub errors: i64,
}

/// What a Twilio status callback says about a call (it may not be stored yet, e.g.
/// an outbound call that is still ringing).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatusUpdate {
    pub call_sid: String,
    /// Twilio's `CallStatus`: `queued`, `ringing`, `in-progress`, `completed`, …
    pub status: String,
    /// Twilio's `CallDuration`, in seconds.
    pub duration_secs: Option<i64>,
    /// Twilio's `AnsweredBy` (answering-machine detection).
    pub answered_by: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub direction: Option<String>,
    pub at: Millis,
}

/// A call recording made by Twilio.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Recording {
    pub sid: Option<String>,
    pub url: Option<String>,
    pub duration_secs: Option<i64>,
    /// Where a copy was saved on this server, if one was.
    pub path: Option<String>,
}

impl Recording {
    fn is_empty(&self) -> bool {
        self.sid.is_none() && self.url.is_none() && self.path.is_none()
    }
}

/// A stored call.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Call {
    pub call_sid: String,
    pub session_id: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub direction: Option<String>,
    pub mode: Option<String>,
    /// The agent that took the call.
    pub agent: Option<String>,
    pub status: String,
    /// The TwiML `<Parameter>`s as a JSON object (text).
    pub parameters: Option<String>,
    pub started_at: Millis,
    pub ended_at: Option<Millis>,
    /// Measured by voxrelay, from connect to end.
    pub duration_ms: Option<i64>,
    /// Reported by Twilio.
    pub twilio_duration_secs: Option<i64>,
    pub answered_by: Option<String>,
    /// How `answered_by` was found: `amd` (Twilio) or `transcript` (the caller's
    /// first words).
    pub answered_by_signal: Option<String>,
    /// When `answered_by` was found.
    pub answered_at: Option<Millis>,
    pub handoff_data: Option<String>,
    /// Replies started, as counted by the agent (set when the call ends).
    pub turns: i64,
    pub interrupts: i64,
    pub errors: i64,
    pub recording: Option<Recording>,
    pub updated_at: Millis,
}

/// A call with the number of records kept for it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CallDetail {
    #[serde(flatten)]
    pub call: Call,
    pub transcript_turns: i64,
    pub tool_calls: i64,
    pub appointments: i64,
}

/// One transcript turn.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Turn {
    /// Position in the call, from 0.
    pub seq: i64,
    /// `caller` or `agent`.
    pub role: String,
    /// Everything the agent produced (or the caller said).
    pub text: String,
    /// The caller talked over this agent turn.
    pub interrupted: bool,
    /// What the caller heard of an interrupted turn.
    pub heard: Option<String>,
    pub started_at: Millis,
    pub ended_at: Millis,
    pub time_to_first_token_ms: Option<i64>,
    /// The LLM request → the LLM's first token.
    pub llm_first_token_ms: Option<i64>,
    /// An agent reply still being spoken (or cut off by a crash): its text is what
    /// had gone out when it was last written.
    pub partial: bool,
}

/// A tool the agent ran.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ToolCall {
    /// Position among the call's tool calls, from 0.
    pub seq: i64,
    pub name: String,
    /// JSON text, as the model produced it.
    pub arguments: String,
    pub result: String,
    pub ok: bool,
    pub started_at: Millis,
    pub duration_ms: i64,
}

/// A booked appointment.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Appointment {
    /// Assigned by the database (ignored when adding).
    pub id: i64,
    pub call_sid: String,
    /// Position among the call's appointments, from 0.
    pub seq: i64,
    pub caller_number: Option<String>,
    pub name: String,
    pub email: Option<String>,
    pub preferred_day: String,
    pub preferred_time: Option<String>,
    pub phone: Option<String>,
    pub notes: Option<String>,
    pub created_at: Millis,
}

/// A call's transcript and tool calls, in order (one page of them).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Transcript {
    pub turns: Vec<Turn>,
    pub tool_calls: Vec<ToolCall>,
    /// More turns follow: the `after` of the next page.
    pub next_after: Option<i64>,
}

/// Where a page of calls starts: strictly older than this call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallCursor {
    pub started_at: Millis,
    pub call_sid: String,
}

impl CallCursor {
    /// The cursor as it travels in `?before=`: `<started_at>.<call_sid>`.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.started_at, self.call_sid)
    }

    pub fn decode(text: &str) -> Option<Self> {
        let (ms, sid) = text.split_once('.')?;
        Some(Self {
            started_at: ms.parse().ok()?,
            call_sid: sid.to_string(),
        })
    }
}

/// Which calls a listing shows; `None` fields match every call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallFilter {
    /// `in-progress`, `completed`, `handoff`, `failed`, … as stored.
    pub status: Option<String>,
    /// `relay`, `stream`, `sip`, `console`.
    pub mode: Option<String>,
    /// The caller's or the called number.
    pub number: Option<String>,
    /// The agent that took the call.
    pub agent: Option<String>,
    /// Started at or after.
    pub since: Option<Millis>,
    /// Started before.
    pub until: Option<Millis>,
}

/// What the console's overview draws, since a given time.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Overview {
    /// `(hour start, calls started)`, hours with calls only.
    pub calls_per_hour: Vec<(Millis, i64)>,
    /// `(hour start, agent replies)`.
    pub replies_per_hour: Vec<(Millis, i64)>,
    /// `(status, calls)`, most frequent first.
    pub by_status: Vec<(String, i64)>,
    /// First-token latencies of the latest replies, newest first.
    pub first_token_ms: Vec<i64>,
}

/// Calls, newest first, and where the next page starts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallPage {
    pub calls: Vec<Call>,
    pub next: Option<CallCursor>,
}

/// Appointments, newest first, and the id the next page starts below.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppointmentPage {
    pub appointments: Vec<Appointment>,
    pub next_before: Option<i64>,
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The notification channel commands for live calls travel on.
pub const CALLS_CHANNEL: &str = "voxrelay_calls";

/// Calls whose row this store has written or checked: their later records skip
/// the statement that makes sure the row exists (half the statements of a turn).
/// Bounded; forgetting a call only costs that statement again.
#[derive(Debug, Default)]
pub struct KnownCalls(std::sync::Mutex<std::collections::HashSet<String>>);

impl KnownCalls {
    /// Most calls remembered (far more than live at once); then it starts over.
    const MAX: usize = 20_000;

    pub fn contains(&self, call_sid: &str) -> bool {
        self.0.lock().is_ok_and(|known| known.contains(call_sid))
    }

    pub fn insert(&self, call_sid: &str) {
        if let Ok(mut known) = self.0.lock()
            && !known.contains(call_sid)
        {
            if known.len() >= Self::MAX {
                known.clear();
            }
            known.insert(call_sid.to_string());
        }
    }

    pub fn remove(&self, call_sid: &str) {
        if let Ok(mut known) = self.0.lock() {
            known.remove(call_sid);
        }
    }

    /// Applies what committed writes did (see [`KnownChanges`]).
    pub fn commit(&self, changes: KnownChanges) {
        for (call_sid, exists) in changes.0 {
            if exists {
                self.insert(&call_sid);
            } else {
                self.remove(&call_sid);
            }
        }
    }
}

/// What writes not yet committed did to [`KnownCalls`] (a call's row written, or a
/// call ended): applied with [`KnownCalls::commit`] once they are, dropped if they
/// roll back, so the store never skips the existence check for a row that is not
/// there.
#[derive(Debug, Default)]
pub struct KnownChanges(std::collections::HashMap<String, bool>);

impl KnownChanges {
    /// Whether `call_sid`'s row exists, counting these changes.
    pub fn contains(&self, known: &KnownCalls, call_sid: &str) -> bool {
        match self.0.get(call_sid) {
            Some(exists) => *exists,
            None => known.contains(call_sid),
        }
    }

    pub fn insert(&mut self, call_sid: &str) {
        self.0.insert(call_sid.to_string(), true);
    }

    pub fn remove(&mut self, call_sid: &str) {
        self.0.insert(call_sid.to_string(), false);
    }
}

/// One call record write, as [`Store::write_batch`] takes it: the same writes as
/// the [`Store`] methods of the same names.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Write<'a> {
    CallStarted(&'a NewCall),
    Turn(&'a str, &'a Turn),
    Interrupted {
        call_sid: &'a str,
        seq: i64,
        heard: &'a str,
    },
    ToolCall(&'a str, &'a ToolCall),
    Appointment(&'a Appointment),
    CallEnded(&'a str, &'a CallEnd),
    RecordingPath(&'a str, &'a str),
    AnsweredBy(&'a str, &'a Detection),
}

/// Who answered a call, as one of our own signals found (Twilio's detection
/// arrives as a [`StatusUpdate`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Detection {
    /// `voicemail` or `screening`.
    pub what: String,
    /// `transcript`.
    pub signal: String,
    pub at: Millis,
}

/// Durable storage for call records. Writes are idempotent (a retried write after
/// an unknown outcome stores nothing twice), so callers may retry freely.
pub trait Store: SharedState {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// Where the data lives, password redacted (for the start-up log).
    fn describe(&self) -> String;
    /// A round trip to the database.
    fn ping(&self) -> BoxFuture<'_, StoreResult<()>>;

    /// Applies a Twilio status callback, creating the call when it is not stored yet.
    fn upsert_status<'a>(&'a self, update: &'a StatusUpdate) -> BoxFuture<'a, StoreResult<()>>;
    /// Sets a call's recording SID, URL and duration (creating the call if needed).
    /// `path` is ignored here: it is a [`Write::RecordingPath`].
    fn set_recording<'a>(
        &'a self,
        call_sid: &'a str,
        recording: &'a Recording,
    ) -> BoxFuture<'a, StoreResult<()>>;
    /// Applies one write on its own.
    fn write<'a>(&'a self, write: Write<'a>) -> BoxFuture<'a, StoreResult<()>>;

    /// Applies `writes` in order in one transaction: all of them, or (on an error)
    /// none. One commit for a burst of records instead of one per record.
    fn write_batch<'a>(&'a self, writes: &'a [Write<'a>]) -> BoxFuture<'a, StoreResult<()>>;

    /// The next free sequence numbers of the call's tool calls, appointments and
    /// turns (0 for a call with none), so a resumed call continues the numbering
    /// and a later session of the call never writes over an earlier one's turns.
    fn next_seqs<'a>(&'a self, call_sid: &'a str) -> BoxFuture<'a, StoreResult<NextSeqs>>;
    /// [`Store::next_seqs`] of several calls in one query; a call absent from the
    /// map has no records yet.
    fn next_seqs_many<'a>(
        &'a self,
        call_sids: &'a [&'a str],
    ) -> BoxFuture<'a, StoreResult<std::collections::HashMap<String, NextSeqs>>>;

    /// Calls newest first: at most `limit`, older than `before`, matching `filter`.
    fn list_calls<'a>(
        &'a self,
        limit: u32,
        before: Option<&'a CallCursor>,
        filter: &'a CallFilter,
    ) -> BoxFuture<'a, StoreResult<CallPage>>;
    /// Counts for the console's overview, of calls and replies since `since`.
    fn overview(&self, since: Millis) -> BoxFuture<'_, StoreResult<Overview>>;
    /// The appointments booked on one call.
    fn call_appointments<'a>(
        &'a self,
        call_sid: &'a str,
    ) -> BoxFuture<'a, StoreResult<Vec<Appointment>>>;
    fn get_call<'a>(&'a self, call_sid: &'a str) -> BoxFuture<'a, StoreResult<Option<CallDetail>>>;
    /// The call's whole transcript, or `None` when the call is unknown.
    fn transcript<'a>(
        &'a self,
        call_sid: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<Transcript>>> {
        self.transcript_page(call_sid, None, u32::MAX)
    }
    /// At most `limit` turns of the call's transcript, those numbered after
    /// `after`, with the tool calls that started among them; `None` when the call
    /// is unknown. [`Transcript::next_after`] is the `after` of the next page.
    fn transcript_page<'a>(
        &'a self,
        call_sid: &'a str,
        after: Option<i64>,
        limit: u32,
    ) -> BoxFuture<'a, StoreResult<Option<Transcript>>>;
    /// Appointments newest first: at most `limit`, with ids below `before`.
    fn list_appointments(
        &self,
        limit: u32,
        before: Option<i64>,
    ) -> BoxFuture<'_, StoreResult<AppointmentPage>>;

    /// Tells every replica `payload` (PostgreSQL `NOTIFY` on [`CALLS_CHANNEL`]).
    /// False when the backend has no such channel (SQLite: one replica only).
    fn notify<'a>(&'a self, payload: &'a str) -> BoxFuture<'a, StoreResult<bool>>;
    /// The payloads of [`Store::notify`] from any replica, this one included;
    /// `None` when the backend has no such channel. Reconnects by itself.
    fn listen(
        &self,
    ) -> BoxFuture<'_, StoreResult<Option<futures::stream::BoxStream<'static, String>>>>;

    /// Closes the connections (after the last write).
    fn close(&self) -> BoxFuture<'_, ()>;
}

/// One record at a time, each its own [`Store::write`]: what tools and tests use.
/// The server's own records go through the recorder's batches.
impl dyn Store {
    /// Records a call that connected (creating it, or completing a record a status
    /// callback made first).
    pub async fn call_started(&self, call: &NewCall) -> StoreResult<()> {
        self.write(Write::CallStarted(call)).await
    }

    /// Adds a transcript turn, or completes a partial one of the same number.
    pub async fn add_turn(&self, call_sid: &str, turn: &Turn) -> StoreResult<()> {
        self.write(Write::Turn(call_sid, turn)).await
    }

    /// Marks an agent turn as interrupted after the caller heard `heard`.
    pub async fn mark_interrupted(&self, call_sid: &str, seq: i64, heard: &str) -> StoreResult<()> {
        self.write(Write::Interrupted {
            call_sid,
            seq,
            heard,
        })
        .await
    }

    pub async fn add_tool_call(&self, call_sid: &str, tool_call: &ToolCall) -> StoreResult<()> {
        self.write(Write::ToolCall(call_sid, tool_call)).await
    }

    pub async fn add_appointment(&self, appointment: &Appointment) -> StoreResult<()> {
        self.write(Write::Appointment(appointment)).await
    }

    /// Closes a call's record.
    pub async fn call_ended(&self, call_sid: &str, end: &CallEnd) -> StoreResult<()> {
        self.write(Write::CallEnded(call_sid, end)).await
    }

    /// Records who answered the call, as one of our signals found.
    pub async fn set_answered_by(&self, call_sid: &str, detection: &Detection) -> StoreResult<()> {
        self.write(Write::AnsweredBy(call_sid, detection)).await
    }

    /// Sets where a local copy of the call's recording was saved.
    pub async fn set_recording_path(&self, call_sid: &str, path: &str) -> StoreResult<()> {
        self.write(Write::RecordingPath(call_sid, path)).await
    }
}

/// Opens the store `url` names, creating a SQLite file (and its directory) when
/// missing, and applies the migrations.
pub async fn open(url: &str) -> StoreResult<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PgStore::open(url).await?))
    } else {
        Err(StoreError::UnsupportedUrl)
    }
}

/// An empty store in memory: SQLite's in-memory database, with the schema and the
/// SQL of production, for unit tests and benchmarks. Nothing outlives it.
pub async fn in_memory() -> Arc<dyn Store> {
    match sqlite::SqliteStore::open("sqlite::memory:").await {
        Ok(store) => Arc::new(store),
        // The embedded migrations on an empty in-memory database cannot fail
        // unless the build itself is broken.
        Err(e) => panic!("cannot open an in-memory store: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_record_at_a_time_reads_back() {
        let store = in_memory().await;
        let call = NewCall {
            call_sid: "CA1".into(),
            from: Some("+5511999990000".into()),
            mode: Some("relay".into()),
            started_at: 1_000,
            ..NewCall::default()
        };
        store.call_started(&call).await.unwrap();
        for (seq, role, text) in [(0, "agent", "Olá!"), (1, "caller", "Oi")] {
            let turn = Turn {
                seq,
                role: role.into(),
                text: text.into(),
                started_at: 1_000 + seq,
                ..Turn::default()
            };
            store.add_turn("CA1", &turn).await.unwrap();
        }
        store.mark_interrupted("CA1", 0, "Ol").await.unwrap();
        let end = CallEnd {
            status: "completed".into(),
            ended_at: 5_000,
            turns: 1,
            ..CallEnd::default()
        };
        store.call_ended("CA1", &end).await.unwrap();
        let detail = store.get_call("CA1").await.unwrap().unwrap();
        assert_eq!(detail.call.status, "completed");
        assert_eq!(detail.call.duration_ms, Some(4_000));
        let transcript = store.transcript("CA1").await.unwrap().unwrap();
        assert_eq!(transcript.turns.len(), 2);
        assert!(transcript.turns[0].interrupted);
        assert_eq!(transcript.turns[0].heard.as_deref(), Some("Ol"));
        assert_eq!(store.next_seqs("CA1").await.unwrap().turn, 2);
        assert!(store.get_call("CA2").await.unwrap().is_none());
    }

    #[test]
    fn known_calls_remember_forget_and_stay_bounded() {
        let known = KnownCalls::default();
        assert!(!known.contains("CA1"));
        known.insert("CA1");
        known.insert("CA1");
        assert!(known.contains("CA1"));
        known.remove("CA1");
        assert!(!known.contains("CA1"));
        for i in 0..KnownCalls::MAX + 5 {
            known.insert(&format!("CA{i}"));
        }
        assert!(known.0.lock().unwrap().len() <= KnownCalls::MAX);
        assert!(known.contains(&format!("CA{}", KnownCalls::MAX + 4)));
    }
}
