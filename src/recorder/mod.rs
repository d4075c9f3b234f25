//! The [`CallObserver`] that saves every call's records in the [`Store`] without
//! ever slowing or breaking the call.
//!
//! Each observer method converts its record and puts it on the writer's queue,
//! then returns: it never awaits, never blocks and never fails. One background
//! writer task applies the queue in order (a turn before its interruption, a call's
//! start before its end). It waits for a record, then gathers what else arrives
//! within [`LINGER`] (up to [`MAX_BATCH`]) and writes the group in one transaction
//! ([`Store::write_batch`]): one commit per group instead of one per record. Records
//! of the same turn in a group (a reply's first words, its progress, its end, its
//! interruption) are merged into one row write first.
//!
//! Durability: a record is committed at most [`LINGER`] plus one commit after it
//! was queued, so a `kill -9` loses at most that window (a few milliseconds; see
//! the README). A reply's text is recorded as it goes out (every
//! `PROGRESS_INTERVAL` of the agent), not only at its end.
//!
//! Overload policy: nothing a live call said is dropped for being queued behind
//! others. When the backlog passes [`BUSY_RECORDS`], [`Recorder::busy`] turns true
//! and the server refuses *new* calls (503) until it drains; only past the hard
//! bound [`HARD_CAP`] (memory) is a record dropped, counted and logged. When a
//! group's transaction fails, its records are written one by one, so a bad record
//! cannot lose the others; a failed write is retried with backoff a bounded number
//! of times, then given up (and counted). On shutdown, [`Recorder::flush`] waits
//! (bounded) until everything queued is written.
//!
//! May import `agent` (the observer trait and records) and `store` (the order is
//! checked by `.ci/layers`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::agent::{
    AppointmentRecord, CallInfo, CallObserver, CallSummary, ToolCallRecord, TurnRecord,
};
use crate::store::{
    Appointment, CallEnd, Detection, NewCall, Store, ToolCall, Turn, Write, millis, now_millis,
};

mod resume;
mod writer;

pub use resume::{RESUME_TURNS, stored_conversation};
pub use writer::MAX_BATCH;
use writer::write_all;

/// Records waiting for the writer at most (a memory bound far above any load the
/// writer falls behind on for long); more are dropped, counted and logged.
pub const HARD_CAP: usize = 2_000_000;
/// Records waiting beyond which new calls are refused until the writer catches up.
pub const BUSY_RECORDS: u64 = 50_000;
/// How long the writer waits for more records after the first of a group.
pub const LINGER: Duration = Duration::from_millis(2);
/// Attempts per write: the first and this many retries.
pub const RETRIES: u32 = 5;
/// Delay before the first retry; doubled for each further one.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// Counters shown on `/status`.
#[derive(Debug, Default)]
pub struct RecorderStats {
    pending: AtomicU64,
    written: AtomicU64,
    retried: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    batches: AtomicU64,
    refused_calls: AtomicU64,
}

/// A snapshot of [`RecorderStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RecorderCounts {
    /// Records queued and not yet written.
    pub pending: u64,
    pub written: u64,
    /// Attempts that failed and were tried again.
    pub retried: u64,
    /// Records given up after every retry failed.
    pub failed: u64,
    /// Records dropped because the backlog passed [`HARD_CAP`].
    pub dropped: u64,
    /// Transactions that wrote several records together.
    pub batches: u64,
    /// New calls refused because the writer was behind ([`Recorder::busy`]).
    pub refused_calls: u64,
}

/// One write, as the store takes it. Tool calls and appointments get their
/// per-call sequence number from the writer.
#[derive(Debug)]
enum Op {
    /// A session of the call started; `true` when it resumed the stored
    /// conversation (its turns are numbered after the stored ones already).
    CallStarted(NewCall, bool),
    Turn(String, Turn),
    Interrupted {
        call_sid: String,
        seq: i64,
        heard: String,
    },
    ToolCall(String, ToolCall),
    Appointment(Appointment),
    CallEnded(String, CallEnd),
    /// A local recording of the call (Media Streams, `RECORD_CALLS`).
    RecordingPath(String, String),
    /// Who answered, by our own detection.
    AnsweredBy(String, Detection),
    /// Answered once everything queued before it has been handled.
    Flush(oneshot::Sender<()>),
}

/// Queues call records for the store; cheap to share across calls.
pub struct Recorder {
    tx: mpsc::UnboundedSender<Op>,
    stats: Arc<RecorderStats>,
    /// Records waiting at most; more are dropped.
    cap: u64,
    /// The replica the calls recorded here belong to (see `calls.owner`).
    owner: Option<String>,
}

impl Recorder {
    /// Starts the writer task for `store` (needs a tokio runtime). The task ends
    /// once the recorder is dropped and the queue is empty.
    pub fn start(store: Arc<dyn Store>) -> Arc<Self> {
        Self::start_with(store, HARD_CAP, FIRST_BACKOFF)
    }

    /// [`Recorder::start`] for the calls of replica `owner`.
    pub fn start_as(store: Arc<dyn Store>, owner: String) -> Arc<Self> {
        Self::spawn(store, HARD_CAP, FIRST_BACKOFF, Some(owner))
    }

    /// [`Recorder::start`] with a given hard cap and first backoff.
    pub fn start_with(store: Arc<dyn Store>, cap: usize, backoff: Duration) -> Arc<Self> {
        Self::spawn(store, cap, backoff, None)
    }

    fn spawn(
        store: Arc<dyn Store>,
        cap: usize,
        backoff: Duration,
        owner: Option<String>,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(RecorderStats::default());
        // A thread of its own: under load the calls' tasks fill the shared
        // runtime's queues, and a writer waiting its turn behind them after each
        // statement falls behind. Its runtime lives as long as the writer does.
        let writer = write_all(store, rx, stats.clone(), backoff);
        let spawned = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(writer),
                    Err(e) => tracing::error!(error = %e, "cannot start the store writer"),
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the store writer thread");
        }
        Arc::new(Self {
            tx,
            stats,
            cap: cap.max(1) as u64,
            owner,
        })
    }

    /// Counts a call refused because the writer is behind; returns the count.
    pub fn refused_call(&self) -> u64 {
        self.stats.refused_calls.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Whether the writer is so far behind that new calls should wait.
    pub fn busy(&self) -> bool {
        self.stats.pending.load(Ordering::Relaxed) >= BUSY_RECORDS.min(self.cap)
    }

    pub fn counts(&self) -> RecorderCounts {
        RecorderCounts {
            pending: self.stats.pending.load(Ordering::Relaxed),
            written: self.stats.written.load(Ordering::Relaxed),
            retried: self.stats.retried.load(Ordering::Relaxed),
            failed: self.stats.failed.load(Ordering::Relaxed),
            dropped: self.stats.dropped.load(Ordering::Relaxed),
            batches: self.stats.batches.load(Ordering::Relaxed),
            refused_calls: self.stats.refused_calls.load(Ordering::Relaxed),
        }
    }

    /// Waits until every record queued so far is written (or given up), at most
    /// `timeout`. Returns whether it got there in time.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Op::Flush(ack)).is_err() {
            return false;
        }
        tokio::time::timeout(timeout, done)
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Queues `op`, or drops it (counted, logged) past the hard cap.
    fn queue(&self, op: Op) {
        let what = op.kind();
        let reason = if self.stats.pending.load(Ordering::Relaxed) >= self.cap {
            "the store writer is too far behind"
        } else {
            self.stats.pending.fetch_add(1, Ordering::Relaxed);
            match self.tx.send(op) {
                Ok(()) => return,
                Err(_) => {
                    self.stats.pending.fetch_sub(1, Ordering::Relaxed);
                    "the store writer stopped"
                }
            }
        };
        let dropped = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        // The first drop and every 100th after it: a stalled database must not
        // flood the log.
        if dropped % 100 == 1 {
            tracing::error!(record = what, dropped, reason, "call record dropped");
        }
    }
}

impl Op {
    /// The store write this record is (none for a flush).
    fn write(&self) -> Option<Write<'_>> {
        Some(match self {
            Op::CallStarted(call, _) => Write::CallStarted(call),
            Op::Turn(sid, turn) => Write::Turn(sid, turn),
            Op::Interrupted {
                call_sid,
                seq,
                heard,
            } => Write::Interrupted {
                call_sid,
                seq: *seq,
                heard,
            },
            Op::ToolCall(sid, tool_call) => Write::ToolCall(sid, tool_call),
            Op::Appointment(a) => Write::Appointment(a),
            Op::CallEnded(sid, end) => Write::CallEnded(sid, end),
            Op::RecordingPath(sid, path) => Write::RecordingPath(sid, path),
            Op::AnsweredBy(sid, detection) => Write::AnsweredBy(sid, detection),
            Op::Flush(_) => return None,
        })
    }

    fn kind(&self) -> &'static str {
        match self {
            Op::CallStarted(..) => "call start",
            Op::Turn(..) => "turn",
            Op::Interrupted { .. } => "interruption",
            Op::ToolCall(..) => "tool call",
            Op::Appointment(_) => "appointment",
            Op::CallEnded(..) => "call end",
            Op::RecordingPath(..) => "recording path",
            Op::AnsweredBy(..) => "answered by",
            Op::Flush(_) => "flush",
        }
    }
}

impl CallObserver for Recorder {
    fn call_started(&self, call: &CallInfo) {
        let parameters = (!call.parameters.is_empty()).then(|| {
            let sorted: BTreeMap<_, _> = call.parameters.iter().collect();
            serde_json::to_string(&sorted).unwrap_or_default()
        });
        let text = |s: &str| (!s.is_empty()).then(|| s.to_string());
        self.queue(Op::CallStarted(
            NewCall {
                call_sid: call.call_sid.clone(),
                session_id: call.session_id.clone().filter(|s| !s.is_empty()),
                from: text(&call.from),
                to: text(&call.to),
                direction: call.direction.clone(),
                mode: text(&call.mode),
                agent: text(&call.agent),
                parameters,
                started_at: now_millis(),
                owner: self.owner.clone(),
            },
            call.resumed,
        ));
    }

    fn turn(&self, call_sid: &str, turn: &TurnRecord) {
        self.queue(Op::Turn(
            call_sid.to_string(),
            Turn {
                seq: i64::from(turn.seq),
                role: turn.speaker.as_str().to_string(),
                text: turn.text.clone(),
                interrupted: false,
                heard: None,
                started_at: millis(turn.started_at),
                ended_at: millis(turn.ended_at),
                time_to_first_token_ms: turn.time_to_first_token_ms.map(|ms| ms as i64),
                llm_first_token_ms: turn.llm_first_token_ms.map(|ms| ms as i64),
                partial: turn.partial,
            },
        ));
    }

    fn turn_interrupted(&self, call_sid: &str, seq: u32, heard: &str) {
        self.queue(Op::Interrupted {
            call_sid: call_sid.to_string(),
            seq: i64::from(seq),
            heard: heard.to_string(),
        });
    }

    fn tool_call(&self, call_sid: &str, record: &ToolCallRecord) {
        self.queue(Op::ToolCall(
            call_sid.to_string(),
            ToolCall {
                seq: 0,
                name: record.name.clone(),
                arguments: record.arguments.clone(),
                result: record.result.clone(),
                ok: record.ok,
                started_at: millis(record.started_at),
                duration_ms: record.duration_ms as i64,
            },
        ));
    }

    fn appointment(&self, call_sid: &str, a: &AppointmentRecord) {
        self.queue(Op::Appointment(Appointment {
            id: 0,
            call_sid: call_sid.to_string(),
            seq: 0,
            caller_number: None,
            name: a.name.clone(),
            email: a.email.clone(),
            preferred_day: a.preferred_day.clone(),
            preferred_time: a.preferred_time.clone(),
            phone: a.phone.clone(),
            notes: a.notes.clone(),
            created_at: a.created_at.map(millis).unwrap_or_else(now_millis),
        }));
    }

    fn call_ended(&self, call_sid: &str, summary: &CallSummary) {
        self.queue(Op::CallEnded(
            call_sid.to_string(),
            CallEnd {
                status: summary.status.clone(),
                ended_at: now_millis(),
                handoff_data: summary.handoff_data.clone(),
                turns: i64::from(summary.turns),
                interrupts: i64::from(summary.interrupts),
                errors: i64::from(summary.llm_errors),
            },
        ));
    }

    fn answered_by(&self, call_sid: &str, what: &str, signal: &str) {
        self.queue(Op::AnsweredBy(
            call_sid.to_string(),
            Detection {
                what: what.to_string(),
                signal: signal.to_string(),
                at: now_millis(),
            },
        ));
    }

    fn recording(&self, call_sid: &str, path: &str) {
        self.queue(Op::RecordingPath(call_sid.to_string(), path.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;
    use std::time::SystemTime;

    use super::*;
    use crate::agent::Speaker;
    use crate::store;

    /// A fresh SQLite file, removed when dropped.
    struct TempDb(std::path::PathBuf);
    impl TempDb {
        fn new() -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            Self(
                std::env::temp_dir()
                    .join(format!("voxrelay-recorder-{}-{n}.db", std::process::id())),
            )
        }
        fn url(&self) -> String {
            format!("sqlite://{}", self.0.display())
        }
    }
    impl Drop for TempDb {
        fn drop(&mut self) {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
            }
        }
    }

    async fn raw(url: &str, sql: &str) {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        sqlx::raw_sql(sql).execute(&pool).await.unwrap();
        pool.close().await;
    }

    fn call(sid: &str, direction: &str) -> CallInfo {
        CallInfo {
            call_sid: sid.into(),
            session_id: Some("VX1".into()),
            from: "+5511999990000".into(),
            to: "+5511333330000".into(),
            direction: Some(direction.into()),
            mode: "relay".into(),
            agent: "default".into(),
            parameters: [("lead".to_string(), "Ana".to_string())].into(),
            may_resume: false,
            resumed: false,
        }
    }

    fn turn(seq: u32, text: &str) -> TurnRecord {
        TurnRecord {
            seq,
            speaker: if seq % 2 == 0 {
                Speaker::Caller
            } else {
                Speaker::Agent
            },
            text: text.into(),
            started_at: SystemTime::now(),
            ended_at: SystemTime::now(),
            time_to_first_token_ms: None,
            llm_first_token_ms: None,
            partial: false,
        }
    }

    fn tool(name: &str) -> ToolCallRecord {
        ToolCallRecord {
            name: name.into(),
            arguments: "{}".into(),
            result: "ok".into(),
            ok: true,
            started_at: SystemTime::now(),
            duration_ms: 3,
        }
    }

    fn booking(name: &str) -> AppointmentRecord {
        AppointmentRecord {
            name: name.into(),
            preferred_day: "2026-11-24".into(),
            ..AppointmentRecord::default()
        }
    }

    fn ended() -> CallSummary {
        CallSummary {
            status: "completed".into(),
            turns: 1,
            ..CallSummary::default()
        }
    }

    #[tokio::test]
    async fn records_reach_the_store_numbered_and_in_order() {
        let db = TempDb::new();
        let store = store::open(&db.url()).await.unwrap();
        let recorder = Recorder::start(store.clone());
        recorder.call_started(&call("CA1", "inbound"));
        recorder.turn("CA1", &turn(0, "Oi"));
        recorder.turn("CA1", &turn(1, "Olá! Em que posso ajudar?"));
        recorder.turn_interrupted("CA1", 1, "Olá!");
        recorder.tool_call("CA1", &tool("check_calendar"));
        recorder.tool_call("CA1", &tool("schedule_appointment"));
        recorder.appointment("CA1", &booking("Ana"));
        recorder.call_ended("CA1", &ended());
        // An outbound call: the party is the number called.
        recorder.call_started(&call("CA2", "outbound-api"));
        recorder.appointment("CA2", &booking("Bia"));
        assert!(recorder.flush(Duration::from_secs(10)).await);
        let counts = recorder.counts();
        assert_eq!((counts.written, counts.pending, counts.failed), (10, 0, 0));

        let detail = store.get_call("CA1").await.unwrap().unwrap();
        assert_eq!(detail.call.status, "completed");
        assert_eq!(detail.call.parameters.as_deref(), Some(r#"{"lead":"Ana"}"#));
        let transcript = store.transcript("CA1").await.unwrap().unwrap();
        assert_eq!(transcript.turns[1].heard.as_deref(), Some("Olá!"));
        let tools: Vec<(i64, &str)> = transcript
            .tool_calls
            .iter()
            .map(|t| (t.seq, t.name.as_str()))
            .collect();
        assert_eq!(tools, [(0, "check_calendar"), (1, "schedule_appointment")]);
        let page = store.list_appointments(10, None).await.unwrap();
        // (Records of different calls written in one group may be reordered.)
        let mut parties: Vec<(&str, Option<&str>)> = page
            .appointments
            .iter()
            .map(|a| (a.name.as_str(), a.caller_number.as_deref()))
            .collect();
        parties.sort();
        assert_eq!(
            parties,
            [
                ("Ana", Some("+5511999990000")),
                ("Bia", Some("+5511333330000"))
            ]
        );
        store.close().await;
    }

    #[tokio::test]
    async fn a_resumed_call_goes_on_numbering_its_records() {
        let db = TempDb::new();
        let store = store::open(&db.url()).await.unwrap();
        let recorder = Recorder::start(store.clone());
        recorder.call_started(&call("CA1", "inbound"));
        recorder.tool_call("CA1", &tool("a"));
        recorder.appointment("CA1", &booking("Ana"));
        recorder.call_ended("CA1", &ended());
        assert!(recorder.flush(Duration::from_secs(10)).await);
        // A new recorder (as after a restart) and the same call reconnecting.
        let recorder = Recorder::start(store.clone());
        recorder.call_started(&call("CA1", "inbound"));
        recorder.tool_call("CA1", &tool("b"));
        recorder.appointment("CA1", &booking("Ana de novo"));
        assert!(recorder.flush(Duration::from_secs(10)).await);
        let transcript = store.transcript("CA1").await.unwrap().unwrap();
        let tools: Vec<(i64, &str)> = transcript
            .tool_calls
            .iter()
            .map(|t| (t.seq, t.name.as_str()))
            .collect();
        assert_eq!(tools, [(0, "a"), (1, "b")]);
        let detail = store.get_call("CA1").await.unwrap().unwrap();
        assert_eq!(detail.appointments, 2);
        store.close().await;
    }

    #[tokio::test]
    async fn past_the_hard_cap_records_are_dropped_and_counted() {
        let db = TempDb::new();
        let store = store::open(&db.url()).await.unwrap();
        let recorder = Recorder::start_with(store.clone(), 4, Duration::from_millis(10));
        // Another writer holds the database: our writes wait for it.
        let blocker = sqlx::SqlitePool::connect(&db.url()).await.unwrap();
        let mut lock = blocker.acquire().await.unwrap();
        sqlx::raw_sql("BEGIN EXCLUSIVE")
            .execute(&mut *lock)
            .await
            .unwrap();
        for seq in 0..50 {
            recorder.turn("CA1", &turn(seq, "palavra"));
        }
        let dropped = recorder.counts().dropped;
        assert!(dropped >= 40, "only {dropped} dropped with a cap of 4");
        assert!(
            recorder.busy(),
            "new calls wait while the writer is this far behind"
        );
        sqlx::raw_sql("COMMIT").execute(&mut *lock).await.unwrap();
        drop(lock);
        blocker.close().await;
        assert!(recorder.flush(Duration::from_secs(10)).await);
        let stored = store.transcript("CA1").await.unwrap().unwrap().turns.len() as u64;
        assert_eq!(stored + dropped, 50, "every record is stored or counted");
        assert!(!recorder.busy());
        store.close().await;
    }

    #[tokio::test]
    async fn failed_writes_are_retried_then_given_up() {
        let db = TempDb::new();
        let store = store::open(&db.url()).await.unwrap();
        let recorder = Recorder::start_with(store.clone(), 16, Duration::from_millis(1));
        raw(&db.url(), "DROP TABLE turns").await;
        recorder.turn("CA1", &turn(0, "Oi"));
        assert!(recorder.flush(Duration::from_secs(10)).await);
        let counts = recorder.counts();
        assert_eq!(counts.failed, 1);
        assert_eq!(counts.retried, u64::from(RETRIES));
        assert_eq!(counts.pending, 0);
        store.close().await;
    }

    #[tokio::test]
    async fn a_write_that_fails_for_a_while_gets_through() {
        let db = TempDb::new();
        let store = store::open(&db.url()).await.unwrap();
        let recorder = Recorder::start_with(store.clone(), 16, Duration::from_millis(20));
        raw(
            &db.url(),
            "ALTER TABLE tool_calls RENAME TO tool_calls_away",
        )
        .await;
        recorder.tool_call("CA1", &tool("check_calendar"));
        tokio::time::sleep(Duration::from_millis(60)).await;
        raw(
            &db.url(),
            "ALTER TABLE tool_calls_away RENAME TO tool_calls",
        )
        .await;
        assert!(recorder.flush(Duration::from_secs(10)).await);
        let counts = recorder.counts();
        assert!(counts.retried >= 1, "{counts:?}");
        assert_eq!(counts.failed, 0);
        let transcript = store.transcript("CA1").await.unwrap().unwrap();
        assert_eq!(transcript.tool_calls.len(), 1);
        store.close().await;
    }
}
