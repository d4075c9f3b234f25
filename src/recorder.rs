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

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::agent::{
    AppointmentRecord, CallInfo, CallObserver, CallSummary, ToolCallRecord, TurnRecord,
};
use crate::store::{
    Appointment, CallEnd, NewCall, NextSeqs, Store, StoreError, ToolCall, Turn, Write, millis,
    now_millis,
};

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

    fn recording(&self, call_sid: &str, path: &str) {
        self.queue(Op::RecordingPath(call_sid.to_string(), path.to_string()));
    }
}

/// What the writer remembers about a live call.
#[derive(Default)]
struct LiveCall {
    /// The other party's number: the caller on inbound calls, the callee on
    /// outbound ones.
    party: Option<String>,
    /// The next tool call's and appointment's numbers; read from the store the
    /// first time they are needed (a resumed call goes on from where it was).
    next: Option<(i64, i64)>,
    /// Added to the agent's turn numbers: the call's next free turn number when
    /// this session started, so a later session of a call (after a restart, say)
    /// appends to the transcript instead of writing over it.
    turn_base: i64,
    /// One past the highest turn number this writer has handed out for the call
    /// (the store cannot tell yet while a burst is uncommitted).
    turns_seen: i64,
}

/// Live calls the writer tracks at most (each is forgotten when its call ends; this
/// only bounds memory should ends go missing).
const MAX_LIVE_CALLS: usize = 100_000;

/// Records the writer takes together at most (one transaction).
pub const MAX_BATCH: usize = 4096;

/// A queued record on its way to the store.
struct Queued {
    op: Op,
    /// Its call's start or end has been noted in the live calls.
    noted: bool,
    /// It has its per-call number (or needs none).
    numbered: bool,
}

/// The writer task: applies queued records in order until the queue closes. It
/// waits for one record, then takes what else arrives within [`LINGER`] (up to
/// [`MAX_BATCH`], up to the first flush).
async fn write_all(
    store: Arc<dyn Store>,
    mut rx: mpsc::UnboundedReceiver<Op>,
    stats: Arc<RecorderStats>,
    backoff: Duration,
) {
    let mut live: HashMap<String, LiveCall> = HashMap::new();
    let mut burst: Vec<Queued> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        let until = tokio::time::Instant::now() + LINGER;
        let mut flush = None;
        let mut next = Some(first);
        while let Some(op) = next.take() {
            if let Op::Flush(ack) = op {
                flush = Some(ack);
                break;
            }
            let numbered = !matches!(
                op,
                Op::ToolCall(..)
                    | Op::Appointment(_)
                    | Op::CallStarted(..)
                    | Op::Turn(..)
                    | Op::Interrupted { .. }
            );
            burst.push(Queued {
                op,
                noted: false,
                numbered,
            });
            if burst.len() < MAX_BATCH {
                next = match rx.try_recv() {
                    Ok(op) => Some(op),
                    Err(_) => tokio::time::timeout_at(until, rx.recv())
                        .await
                        .ok()
                        .flatten(),
                };
            }
        }
        // Between bursts only: a call's state must not vanish in the middle of one.
        if live.len() >= MAX_LIVE_CALLS {
            live.clear();
        }
        write_burst(&*store, &mut burst, &mut live, &stats, backoff).await;
        if let Some(ack) = flush {
            let _ = ack.send(());
        }
    }
    tracing::debug!("store writer stopped");
}

/// Writes a burst of records: several in one transaction; one alone, or all of
/// them one by one when their transaction fails (so one bad record cannot lose the
/// others). The numbers given before a failed transaction stay with their records,
/// so the one-by-one writes store the same numbers; the store only counts a call's
/// row as written once its transaction commits.
async fn write_burst(
    store: &dyn Store,
    burst: &mut Vec<Queued>,
    live: &mut HashMap<String, LiveCall>,
    stats: &RecorderStats,
    backoff: Duration,
) {
    if burst.len() > 1 {
        match write_together(store, burst, live, stats).await {
            Ok(()) => {
                let n = burst.len() as u64;
                stats.written.fetch_add(n, Ordering::Relaxed);
                stats.batches.fetch_add(1, Ordering::Relaxed);
                stats.pending.fetch_sub(n, Ordering::Relaxed);
                forget_ended(burst, live);
                burst.clear();
                return;
            }
            Err(e) => {
                tracing::warn!(records = burst.len(), error = %e, "store batch failed; writing its records one by one");
            }
        }
    }
    for queued in burst.iter_mut() {
        write_one(store, queued, live, stats, backoff).await;
    }
    forget_ended(burst, live);
    burst.clear();
}

/// Numbers the burst's records in order, merges the records of each turn, then
/// writes them in one transaction.
async fn write_together(
    store: &dyn Store,
    burst: &mut Vec<Queued>,
    live: &mut HashMap<String, LiveCall>,
    stats: &RecorderStats,
) -> Result<(), StoreError> {
    // Where each starting call's numbers begin: one query for the whole group.
    let starting: Vec<&str> = burst
        .iter()
        .filter(|q| !q.numbered && matches!(q.op, Op::CallStarted(..)))
        .map(|q| op_call_sid(&q.op))
        .collect();
    let stored = if starting.is_empty() {
        HashMap::new()
    } else {
        store.next_seqs_many(&starting).await?
    };
    for queued in burst.iter_mut() {
        prepare(store, queued, live, Some(&stored)).await?;
    }
    let merged = merge_turns(burst);
    if merged > 0 {
        stats.written.fetch_add(merged, Ordering::Relaxed);
        stats.pending.fetch_sub(merged, Ordering::Relaxed);
    }
    let writes: Vec<Write<'_>> = burst.iter().filter_map(|q| q.op.write()).collect();
    store.write_batch(&writes).await
}

/// Folds the later records of a turn (numbered already) into its first record in
/// the burst: its progress and end replace the text, its interruption is noted on
/// it. Returns how many records were folded away.
fn merge_turns(burst: &mut Vec<Queued>) -> u64 {
    let before = burst.len();
    let mut kept: Vec<Queued> = Vec::with_capacity(before);
    let mut first: HashMap<(String, i64), usize> = HashMap::new();
    for queued in burst.drain(..) {
        let key = match &queued.op {
            Op::Turn(sid, turn) => (sid.clone(), turn.seq),
            Op::Interrupted { call_sid, seq, .. } => (call_sid.clone(), *seq),
            _ => {
                kept.push(queued);
                continue;
            }
        };
        let Some(&at) = first.get(&key) else {
            if matches!(queued.op, Op::Turn(..)) {
                first.insert(key, kept.len());
            }
            kept.push(queued);
            continue;
        };
        let Op::Turn(_, target) = &mut kept[at].op else {
            kept.push(queued);
            continue;
        };
        let Queued {
            op,
            noted,
            numbered,
        } = queued;
        match op {
            Op::Turn(_, turn) => {
                target.text = turn.text;
                target.ended_at = turn.ended_at;
                target.partial = turn.partial;
                target.time_to_first_token_ms = turn
                    .time_to_first_token_ms
                    .or(target.time_to_first_token_ms);
                target.interrupted |= turn.interrupted;
                target.heard = turn.heard.or(target.heard.take());
            }
            Op::Interrupted { heard, .. } => {
                target.interrupted = true;
                target.heard = Some(heard);
            }
            op => kept.push(Queued {
                op,
                noted,
                numbered,
            }),
        }
    }
    *burst = kept;
    (before - burst.len()) as u64
}

/// Writes one record on its own, retrying with backoff, and counts the outcome.
async fn write_one(
    store: &dyn Store,
    queued: &mut Queued,
    live: &mut HashMap<String, LiveCall>,
    stats: &RecorderStats,
    backoff: Duration,
) {
    let call_sid = op_call_sid(&queued.op).to_string();
    let mut delay = backoff;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = async {
            prepare(store, queued, live, None).await?;
            apply(store, &queued.op).await
        }
        .await;
        match result {
            Ok(()) => {
                stats.written.fetch_add(1, Ordering::Relaxed);
                break;
            }
            Err(e) if attempt <= RETRIES => {
                stats.retried.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(call_sid, record = queued.op.kind(), attempt, error = %e, retry_in = ?delay, "store write failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(call_sid, record = queued.op.kind(), attempts = attempt, error = %e, "store write failed; giving up on this record");
                break;
            }
        }
    }
    stats.pending.fetch_sub(1, Ordering::Relaxed);
}

/// Notes a call's start or end and numbers the record, each once. `stored`: the
/// group's starting calls' numbers, read together (a call absent has no records).
async fn prepare(
    store: &dyn Store,
    queued: &mut Queued,
    live: &mut HashMap<String, LiveCall>,
    stored: Option<&HashMap<String, NextSeqs>>,
) -> Result<(), StoreError> {
    if !queued.noted {
        note(&queued.op, live);
        queued.noted = true;
    }
    if !queued.numbered {
        number(store, &mut queued.op, live, stored).await?;
        queued.numbered = true;
    }
    Ok(())
}

/// Forgets the calls whose last record in the burst is their end.
fn forget_ended(burst: &[Queued], live: &mut HashMap<String, LiveCall>) {
    let mut ended: HashMap<&str, bool> = HashMap::new();
    for queued in burst {
        ended.insert(
            op_call_sid(&queued.op),
            matches!(queued.op, Op::CallEnded(..)),
        );
    }
    for (call_sid, ended) in ended {
        // A call that appended to an earlier session's transcript keeps its base
        // (bounded by MAX_LIVE_CALLS): a resumed session goes on numbering from it.
        if ended && live.get(call_sid).is_some_and(|c| c.turn_base == 0) {
            live.remove(call_sid);
        }
    }
}

fn live_call<'a>(live: &'a mut HashMap<String, LiveCall>, call_sid: &str) -> &'a mut LiveCall {
    live.entry(call_sid.to_string()).or_default()
}

/// Notes the other party's number when a call starts, and forgets it when the call
/// ends. The call's numbering stays until the end of the burst (a call that
/// reconnects in the same burst goes on from there: the store cannot tell yet, as
/// the burst is not committed).
fn note(op: &Op, live: &mut HashMap<String, LiveCall>) {
    match op {
        Op::CallStarted(call, _) => {
            let outbound = call
                .direction
                .as_deref()
                .is_some_and(|d| d.starts_with("outbound"));
            let party = if outbound { &call.to } else { &call.from };
            live_call(live, &call.call_sid).party = party.clone();
        }
        Op::CallEnded(call_sid, _) => {
            if let Some(state) = live.get_mut(call_sid.as_str()) {
                state.party = None;
            }
        }
        _ => {}
    }
}

/// Gives a tool call or appointment its per-call number (and an appointment the
/// party's number); at a call's start reads where its turn numbers begin, and
/// moves its turns (and their interruptions) there.
async fn number(
    store: &dyn Store,
    op: &mut Op,
    live: &mut HashMap<String, LiveCall>,
    prefetched: Option<&HashMap<String, NextSeqs>>,
) -> Result<(), StoreError> {
    let sid = op_call_sid(op).to_string();
    let state = live_call(live, &sid);
    match op {
        Op::CallStarted(_, resumed) => {
            let stored = match prefetched {
                Some(found) => found.get(&sid).copied().unwrap_or_default(),
                None => store.next_seqs(&sid).await?,
            };
            // A resumed conversation numbers its turns after the stored ones itself.
            state.turn_base = if *resumed {
                0
            } else {
                stored.turn.max(state.turns_seen)
            };
            state.next = Some(match state.next {
                Some((t, a)) => (t.max(stored.tool_call), a.max(stored.appointment)),
                None => (stored.tool_call, stored.appointment),
            });
            return Ok(());
        }
        Op::Turn(_, turn) => {
            turn.seq += state.turn_base;
            state.turns_seen = state.turns_seen.max(turn.seq + 1);
            return Ok(());
        }
        Op::Interrupted { seq, .. } => {
            *seq += state.turn_base;
            return Ok(());
        }
        _ => {}
    }
    let (tool_calls, appointments) = match state.next {
        Some(next) => next,
        None => {
            let next = store.next_seqs(&sid).await?;
            (next.tool_call, next.appointment)
        }
    };
    match op {
        Op::ToolCall(_, tool_call) => {
            tool_call.seq = tool_calls;
            state.next = Some((tool_calls + 1, appointments));
        }
        Op::Appointment(a) => {
            a.seq = appointments;
            a.caller_number = state.party.clone();
            state.next = Some((tool_calls, appointments + 1));
        }
        _ => state.next = Some((tool_calls, appointments)),
    }
    Ok(())
}

fn op_call_sid(op: &Op) -> &str {
    match op {
        Op::CallStarted(call, _) => &call.call_sid,
        Op::Turn(sid, _)
        | Op::ToolCall(sid, _)
        | Op::CallEnded(sid, _)
        | Op::RecordingPath(sid, _) => sid,
        Op::Interrupted { call_sid, .. } => call_sid,
        Op::Appointment(a) => &a.call_sid,
        Op::Flush(_) => "",
    }
}

/// Writes one record on its own (a flush writes nothing).
async fn apply(store: &dyn Store, op: &Op) -> Result<(), StoreError> {
    match op.write() {
        Some(write) => store.write(write).await,
        None => Ok(()),
    }
}

/// Turns of a stored conversation a resumed call takes back at most (the agent's
/// history bound trims further).
pub const RESUME_TURNS: i64 = 200;

/// The call's conversation as the store holds it, for a session that resumes it
/// on any replica: its last [`RESUME_TURNS`] turns (an agent turn as the caller
/// heard it when interrupted, a partial one as far as it had gone out) and the
/// next turn's number. `None` when nothing was said yet.
pub async fn stored_conversation(
    store: &dyn Store,
    call_sid: &str,
) -> Result<Option<crate::agent::Resume>, StoreError> {
    use crate::agent::Speaker;
    let next = store.next_seqs(call_sid).await?;
    if next.turn == 0 {
        return Ok(None);
    }
    let after = (next.turn - 1 - RESUME_TURNS).max(-1);
    let after = (after >= 0).then_some(after);
    let Some(page) = store
        .transcript_page(call_sid, after, RESUME_TURNS as u32)
        .await?
    else {
        return Ok(None);
    };
    let turns = page
        .turns
        .into_iter()
        .filter_map(|turn| {
            let speaker = if turn.role == "caller" {
                Speaker::Caller
            } else {
                Speaker::Agent
            };
            let text = match (turn.interrupted, turn.heard) {
                (true, Some(heard)) => heard,
                _ => turn.text,
            };
            (!text.trim().is_empty()).then_some((speaker, text))
        })
        .collect();
    Ok(Some(crate::agent::Resume::Transcript {
        turns,
        next_seq: u32::try_from(next.turn).unwrap_or(u32::MAX),
    }))
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
