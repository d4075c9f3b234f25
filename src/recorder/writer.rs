//! The recorder's writer: one task (on a thread of its own) that takes the queued
//! records in groups, numbers them (tool calls, appointments, a later session's
//! turns), merges the records of each turn, and writes each group in one
//! transaction, falling back to one record at a time with retries when a group
//! fails. May import the store and the recorder's own queue types.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{LINGER, Op, RETRIES, RecorderStats};
use crate::store::{NextSeqs, Store, StoreError, Write};

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
/// waits for one record, then takes what else has arrived [`LINGER`] later (up to
/// [`MAX_BATCH`], up to the first flush).
pub(super) async fn write_all(
    store: Arc<dyn Store>,
    mut rx: mpsc::UnboundedReceiver<Op>,
    stats: Arc<RecorderStats>,
    backoff: Duration,
) {
    let mut live: HashMap<String, LiveCall> = HashMap::new();
    let mut burst: Vec<Queued> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        let until = tokio::time::Instant::now() + LINGER;
        // What is queued now, then one sleep to the end of the linger, then what
        // came meanwhile. Waiting on the queue instead would wake this thread for
        // every record that arrives (a wake-up per record under load).
        let mut flush = take(first, &mut burst);
        if flush.is_none() {
            flush = drain(&mut rx, &mut burst);
        }
        if flush.is_none() && burst.len() < MAX_BATCH {
            tokio::time::sleep_until(until).await;
            flush = drain(&mut rx, &mut burst);
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

/// Adds `op` to the burst; a flush request is handed back instead.
fn take(op: Op, burst: &mut Vec<Queued>) -> Option<oneshot::Sender<()>> {
    if let Op::Flush(ack) = op {
        return Some(ack);
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
    None
}

/// Moves what is queued into the burst, up to [`MAX_BATCH`] or a flush request
/// (handed back; what follows it waits for the next burst).
fn drain(
    rx: &mut mpsc::UnboundedReceiver<Op>,
    burst: &mut Vec<Queued>,
) -> Option<oneshot::Sender<()>> {
    while burst.len() < MAX_BATCH {
        let Ok(op) = rx.try_recv() else { break };
        if let Some(ack) = take(op, burst) {
            return Some(ack);
        }
    }
    None
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
    let mut first: HashMap<(String, i64), usize> = HashMap::with_capacity(before);
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
                target.llm_first_token_ms = turn.llm_first_token_ms.or(target.llm_first_token_ms);
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
    let mut ended: HashMap<&str, bool> = HashMap::with_capacity(burst.len());
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
        | Op::RecordingPath(sid, _)
        | Op::AnsweredBy(sid, _) => sid,
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
