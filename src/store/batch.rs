//! Many call records in few statements: the multi-row statements the writer's
//! groups are written with, and the order they may be written in.
//!
//! - [`MultiRow`]: an `INSERT … VALUES (…), (…) … ON CONFLICT …` with a fixed
//!   number of rows, prepared once per size (powers of two up to [`MAX_ROWS`]), with
//!   `$n` placeholders for PostgreSQL and plain `?` for SQLite (whose numbered
//!   parameters make binding hundreds of them quadratic).
//! - [`layers`]: a group's writes reordered so that writes of the same kind go out
//!   together. Writes of different calls never depend on each other, so only each
//!   call's own order must hold: layer `k` holds each call's `k`-th run of writes
//!   of one kind (its start, then its turns, then its end …).
//!
//! Pure: no I/O, no database types.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::OnceLock;

use super::Write;

/// Most rows one statement writes.
pub const MAX_ROWS: usize = 128;

/// A multi-row upsert: `prefix`, `rows` tuples of `columns` placeholders, `suffix`.
pub struct MultiRow {
    prefix: &'static str,
    columns: usize,
    suffix: &'static str,
    cache: [OnceLock<Vec<String>>; 2],
}

impl MultiRow {
    pub const fn new(prefix: &'static str, columns: usize, suffix: &'static str) -> Self {
        Self {
            prefix,
            columns,
            suffix,
            cache: [OnceLock::new(), OnceLock::new()],
        }
    }

    /// The statement for `rows` rows (a power of two up to [`MAX_ROWS`]), with
    /// numbered (`$n`) or plain (`?`) placeholders.
    pub fn sql(&self, rows: usize, numbered: bool) -> &str {
        let sizes = self.cache[usize::from(numbered)].get_or_init(|| {
            (0..=MAX_ROWS.trailing_zeros())
                .map(|p| self.build(1 << p, numbered))
                .collect()
        });
        let index = (rows.max(1).trailing_zeros() as usize).min(sizes.len() - 1);
        &sizes[index]
    }

    fn build(&self, rows: usize, numbered: bool) -> String {
        let mut sql = String::from(self.prefix);
        for row in 0..rows {
            sql.push_str(if row == 0 { "(" } else { ", (" });
            for col in 0..self.columns {
                if col > 0 {
                    sql.push_str(", ");
                }
                if numbered {
                    sql.push_str(&format!("${}", row * self.columns + col + 1));
                } else {
                    sql.push('?');
                }
            }
            sql.push(')');
        }
        sql.push_str(self.suffix);
        sql
    }
}

/// Turns: a partial one (an agent reply being spoken) is completed by a later
/// write of the same number; a complete one is never written over (a retry changes
/// nothing, and no later session of the call can overwrite it). An interruption
/// already noted is kept. Binds: call_sid, seq, role, text, interrupted, heard,
/// started_at, ended_at, time_to_first_token_ms, llm_first_token_ms, partial.
pub static TURNS: MultiRow = MultiRow::new(
    "INSERT INTO turns (call_sid, seq, role, text, interrupted, heard, started_at, \
     ended_at, time_to_first_token_ms, llm_first_token_ms, partial) VALUES ",
    11,
    " ON CONFLICT (call_sid, seq) DO UPDATE SET text = excluded.text, \
     ended_at = excluded.ended_at, \
     time_to_first_token_ms = COALESCE(excluded.time_to_first_token_ms, \
       turns.time_to_first_token_ms), \
     llm_first_token_ms = COALESCE(excluded.llm_first_token_ms, \
       turns.llm_first_token_ms), \
     partial = excluded.partial, interrupted = turns.interrupted OR excluded.interrupted, \
     heard = COALESCE(excluded.heard, turns.heard) WHERE turns.partial",
);

/// A session connected: the call is live again even if an earlier session of it
/// ended (Twilio reconnects a dropped socket to the same call), and owned by the
/// replica whose socket carries it. The numbers, direction, mode and parameters
/// first written are kept: a later session of the call cannot rewrite them.
/// Binds: call_sid, session_id, from, to, direction, mode, status ('in-progress'),
/// parameters, started_at, updated_at, owner, agent.
pub static CALLS_STARTED: MultiRow = MultiRow::new(
    "INSERT INTO calls (call_sid, session_id, from_number, to_number, direction, mode, \
     status, parameters, started_at, updated_at, owner, agent) VALUES ",
    12,
    " ON CONFLICT (call_sid) DO UPDATE SET \
     session_id = COALESCE(excluded.session_id, calls.session_id), \
     from_number = COALESCE(calls.from_number, excluded.from_number), \
     to_number = COALESCE(calls.to_number, excluded.to_number), \
     direction = COALESCE(calls.direction, excluded.direction), \
     mode = COALESCE(calls.mode, excluded.mode), \
     agent = COALESCE(calls.agent, excluded.agent), \
     parameters = COALESCE(calls.parameters, excluded.parameters), \
     status = 'in-progress', ended_at = NULL, duration_ms = NULL, \
     owner = excluded.owner, updated_at = excluded.updated_at",
);

/// A call's record closed. Binds: call_sid, status, started_at (the end time, for a
/// call never started), ended_at, duration_ms (0), handoff_data, turns, interrupts,
/// errors, updated_at.
pub static CALLS_ENDED: MultiRow = MultiRow::new(
    "INSERT INTO calls (call_sid, status, started_at, ended_at, duration_ms, handoff_data, \
     turns, interrupts, errors, updated_at) VALUES ",
    10,
    " ON CONFLICT (call_sid) DO UPDATE SET status = excluded.status, \
     ended_at = excluded.ended_at, duration_ms = excluded.ended_at - calls.started_at, \
     handoff_data = excluded.handoff_data, turns = excluded.turns, \
     interrupts = excluded.interrupts, errors = excluded.errors, \
     updated_at = excluded.updated_at",
);

/// The statement sizes `n` rows are written in: the largest power of two first.
pub fn chunks(mut n: usize) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if n == 0 {
            return None;
        }
        let size = (1usize << (usize::BITS - 1 - n.leading_zeros())).min(MAX_ROWS);
        n -= size;
        Some(size)
    })
}

/// `items` cut where a key repeats: one statement may not upsert a row twice.
pub fn distinct_runs<T, K: Eq + Hash>(items: &[T], key: impl Fn(&T) -> K) -> Vec<&[T]> {
    let mut runs = Vec::new();
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    let mut start = 0;
    for (i, item) in items.iter().enumerate() {
        if !seen.insert(key(item)) {
            runs.push(&items[start..i]);
            start = i;
            seen.clear();
            seen.insert(key(item));
        }
    }
    if start < items.len() {
        runs.push(&items[start..]);
    }
    runs
}

/// The call a write belongs to, and its kind.
fn call_and_kind<'a>(write: &Write<'a>) -> (&'a str, u8) {
    match *write {
        Write::CallStarted(call) => (&call.call_sid, 0),
        Write::Turn(sid, _) => (sid, 1),
        Write::Interrupted { call_sid, .. } => (call_sid, 2),
        Write::ToolCall(sid, _) => (sid, 3),
        Write::Appointment(a) => (&a.call_sid, 4),
        Write::CallEnded(sid, _) => (sid, 5),
        Write::RecordingPath(sid, _) => (sid, 6),
        Write::AnsweredBy(sid, _) => (sid, 7),
    }
}

/// `writes` in layers: each call's writes keep their order across layers, and a
/// layer holds at most one run of one kind per call, so within a layer writes of
/// a kind may go out together in any order.
pub fn layers<'a>(writes: &[Write<'a>]) -> Vec<Vec<Write<'a>>> {
    let mut layers: Vec<Vec<Write<'a>>> = Vec::new();
    let mut last: HashMap<&str, (usize, u8)> = HashMap::with_capacity(writes.len());
    for write in writes {
        let (call, kind) = call_and_kind(write);
        let layer = match last.get(call) {
            None => 0,
            Some(&(layer, k)) if k == kind => layer,
            Some(&(layer, _)) => layer + 1,
        };
        last.insert(call, (layer, kind));
        if layers.len() <= layer {
            layers.resize_with(layer + 1, Vec::new);
        }
        layers[layer].push(*write);
    }
    layers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{CallEnd, NewCall, Turn};

    #[test]
    fn statements_have_their_placeholders() {
        assert_eq!(
            CALLS_ENDED.sql(2, true).matches('$').count(),
            20,
            "{}",
            CALLS_ENDED.sql(2, true)
        );
        let plain = TURNS.sql(4, false);
        assert_eq!(plain.matches('?').count(), 44);
        assert!(!plain.contains('$'));
        assert!(TURNS.sql(1, true).contains("($1, $2, $3"));
    }

    #[test]
    fn chunks_are_powers_of_two_and_cover_everything() {
        let sizes: Vec<usize> = chunks(300).collect();
        assert_eq!(sizes, vec![128, 128, 32, 8, 4]);
        assert_eq!(chunks(0).count(), 0);
    }

    #[test]
    fn a_repeated_key_starts_a_new_run() {
        let items = [1, 2, 3, 2, 4, 1];
        let runs = distinct_runs(&items, |x| *x);
        assert_eq!(runs, vec![&[1, 2, 3][..], &[2, 4, 1][..]]);
    }

    #[test]
    fn each_call_keeps_its_order_across_layers() {
        let start = |sid: &str| NewCall {
            call_sid: sid.into(),
            ..NewCall::default()
        };
        let (a, b) = (start("CAa"), start("CAb"));
        let t = Turn::default();
        let end = CallEnd::default();
        let writes = [
            Write::CallStarted(&a),
            Write::Turn("CAa", &t),
            Write::CallStarted(&b),
            Write::Turn("CAa", &t),
            Write::CallEnded("CAa", &end),
            Write::Turn("CAb", &t),
            Write::CallStarted(&a),
        ];
        let kinds: Vec<Vec<(&str, u8)>> = layers(&writes)
            .iter()
            .map(|l| l.iter().map(call_and_kind).collect())
            .collect();
        assert_eq!(
            kinds,
            vec![
                vec![("CAa", 0), ("CAb", 0)],
                vec![("CAa", 1), ("CAa", 1), ("CAb", 1)],
                vec![("CAa", 5)],
                vec![("CAa", 0)],
            ]
        );
    }
}
