//! The records of `voxrelay-floor --record FILE`: the least a ConversationRelay
//! server does that keeps each turn in SQLite as durably as ours, to tell what the
//! records themselves cost from what our recorder adds to them.
//!
//! One row per turn (`call_sid`, `seq`, `role`, `text`, `at`): the caller's words
//! when the prompt arrives, the agent's reply when its first words go out and again,
//! complete, at its end. Rows are queued to one writer task that, like ours, waits
//! [`LINGER`] for more after the first, merges the writes of the same turn (the last
//! one wins) and writes the group in one transaction of multi-row upserts, prepared
//! once per size (powers of two, our store's [`MultiRow`] and [`chunks`]). The same
//! SQLite settings as our store: WAL, `synchronous = NORMAL`, statement journals
//! in memory. No call rows, tool calls, interruptions, retries or overload policy:
//! the per-turn part of the job only.
//!
//! May import `store`'s statement builders (the order is checked by `.ci/layers`).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Pool, Sqlite};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::store::batch::{MultiRow, chunks};

/// How long the writer waits for more rows after the first of a group (ours: 2 ms).
pub const LINGER: Duration = Duration::from_millis(2);
/// The upsert of a group's turns; the last write of a turn wins.
static TURNS: MultiRow = MultiRow::new(
    "INSERT INTO turns (call_sid, seq, role, text, at) VALUES ",
    5,
    " ON CONFLICT (call_sid, seq) DO UPDATE SET text = excluded.text, at = excluded.at",
);
/// Most rows one group writes.
const MAX_GROUP: usize = 4096;

/// One turn's row as it stands now.
#[derive(Debug)]
pub struct Row {
    pub call_sid: Arc<str>,
    pub seq: u32,
    pub role: &'static str,
    pub text: String,
    pub at_ms: i64,
}

/// Where calls queue their rows; dropping every clone lets the writer finish.
pub type Rows = mpsc::UnboundedSender<Row>;

/// What the writer did: rows written (a turn written in two groups counts twice)
/// in how many transactions.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub rows: u64,
    pub groups: u64,
}

/// Opens (creating) the SQLite file at `path` and starts the writer. The handle
/// ends, with what it wrote, once every [`Rows`] is dropped and the queue is
/// written.
pub async fn start(path: &Path) -> Result<(Rows, JoinHandle<Written>), sqlx::Error> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let options = SqliteConnectOptions::from_str("sqlite://")?
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .pragma("temp_store", "memory");
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS turns (call_sid TEXT NOT NULL, seq INTEGER NOT NULL, \
         role TEXT NOT NULL, text TEXT NOT NULL, at INTEGER NOT NULL, \
         PRIMARY KEY (call_sid, seq))",
    )
    .execute(&pool)
    .await?;
    let (rows, queue) = mpsc::unbounded_channel();
    Ok((rows, tokio::spawn(write_all(pool, queue))))
}

async fn write_all(pool: Pool<Sqlite>, mut queue: mpsc::UnboundedReceiver<Row>) -> Written {
    let mut written = Written::default();
    let mut group = Vec::new();
    while let Some(first) = queue.recv().await {
        group.push(first);
        let deadline = tokio::time::Instant::now() + LINGER;
        while group.len() < MAX_GROUP {
            match tokio::time::timeout_at(deadline, queue.recv()).await {
                Ok(Some(row)) => group.push(row),
                Ok(None) | Err(_) => break,
            }
        }
        let rows = merge(&mut group);
        match write_group(&pool, &rows).await {
            Ok(()) => {
                written.rows += rows.len() as u64;
                written.groups += 1;
            }
            Err(e) => eprintln!("floor records: a group of {} rows failed: {e}", rows.len()),
        }
    }
    pool.close().await;
    written
}

/// The group's rows, one per turn (the last write of each), in their first order.
fn merge(group: &mut Vec<Row>) -> Vec<Row> {
    let mut at: HashMap<(Arc<str>, u32), usize> = HashMap::with_capacity(group.len());
    let mut rows: Vec<Row> = Vec::with_capacity(group.len());
    for row in group.drain(..) {
        match at.entry((row.call_sid.clone(), row.seq)) {
            Entry::Occupied(first) => rows[*first.get()] = row,
            Entry::Vacant(slot) => {
                slot.insert(rows.len());
                rows.push(row);
            }
        }
    }
    rows
}

async fn write_group(pool: &Pool<Sqlite>, rows: &[Row]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut rest = rows;
    for size in chunks(rows.len()) {
        let (chunk, more) = rest.split_at(size);
        let mut query = sqlx::query(TURNS.sql(size, false));
        for row in chunk {
            query = query
                .bind(&*row.call_sid)
                .bind(row.seq)
                .bind(row.role)
                .bind(&row.text)
                .bind(row.at_ms);
        }
        query.execute(&mut *tx).await?;
        rest = more;
    }
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(call: &Arc<str>, seq: u32, text: &str) -> Row {
        Row {
            call_sid: call.clone(),
            seq,
            role: "agent",
            text: text.into(),
            at_ms: 0,
        }
    }

    #[test]
    fn a_group_keeps_the_last_write_of_each_turn_in_first_order() {
        let (a, b): (Arc<str>, Arc<str>) = ("CA1".into(), "CA2".into());
        let mut group = vec![
            row(&a, 1, "Ol"),
            row(&b, 1, "Sim"),
            row(&a, 1, "Olá, tudo bem?"),
        ];
        let rows = merge(&mut group);
        let got: Vec<(&str, &str)> = rows.iter().map(|r| (&*r.call_sid, &*r.text)).collect();
        assert_eq!(got, [("CA1", "Olá, tudo bem?"), ("CA2", "Sim")]);
    }

    #[test]
    fn upserts_bind_five_values_a_row() {
        let sql = TURNS.sql(4, false);
        assert_eq!(sql.matches('?').count(), 20);
        assert!(sql.ends_with("at = excluded.at"));
    }

    #[tokio::test]
    async fn every_row_is_written_once_with_its_last_text() {
        let dir = std::env::temp_dir().join(format!("floor-records-{}", std::process::id()));
        // Its folder is created too.
        let path = dir.join("floor.sqlite");
        let (rows, writer) = start(&path).await.unwrap();
        let call: Arc<str> = "CA1".into();
        // 300 turns: groups of more than one statement's rows.
        for seq in 0..300 {
            rows.send(row(&call, seq, "first words")).unwrap();
            rows.send(row(&call, seq, "first words, and the rest"))
                .unwrap();
        }
        drop(rows);
        assert!(writer.await.unwrap().rows >= 300);
        let pool = sqlx::SqlitePool::connect_with(SqliteConnectOptions::new().filename(&path))
            .await
            .unwrap();
        let (count, complete): (i64, i64) =
            sqlx::query_as("SELECT COUNT(*), SUM(text = 'first words, and the rest') FROM turns")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!((count, complete), (300, 300));
        pool.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }
}
