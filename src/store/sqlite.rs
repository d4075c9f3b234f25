//! The SQLite backend (the default): a file created on first run, with its
//! directory, in WAL mode so the API reads while calls write.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Pool, Sqlite};

use super::backend::impl_store;
use super::shared::impl_shared;
use super::writes::impl_writes;
use super::{StoreError, StoreResult, migrations};

/// Call records in a SQLite file (or in memory, for `sqlite::memory:`).
pub struct SqliteStore {
    /// Reads, the calls' shared state (tokens, reconnect answers) and the
    /// single writes of Twilio's status and recording callbacks.
    pool: Pool<Sqlite>,
    /// The recorder's connection: one, always the same, so its page cache stays
    /// warm between batches (a pool hands out its connections in turn, and each
    /// one re-read the pages the others had changed). The recorder's reads of
    /// where a call's numbering stands and the replica's rounds go through it
    /// too: back to back through the reader pool, they opened up to four
    /// connections at start and in bursts of starting calls, each a thread and
    /// a page cache kept for good. The calls' shared state does not: there, its
    /// single-statement writes (one per call start) queued behind the
    /// recorder's batches, and at saturation the recorder fell behind and
    /// calls were refused (BENCHMARKS.md, issue 17, thirteenth session).
    writer: Pool<Sqlite>,
    location: String,
    /// Calls whose row exists (records for them skip the existence check).
    known: super::KnownCalls,
}

impl SqliteStore {
    /// Opens (creating when missing) the database `url` names, e.g.
    /// `sqlite://data/voxrelay.db`, and applies the migrations.
    pub async fn open(url: &str) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            // Statement journals in memory: the writer's multi-row upserts each
            // keep one, and on disk every one of them was a temporary file that
            // took a write per page (half of all writes under load).
            .pragma("temp_store", "memory")
            // Reads straight from the mapped file instead of a read() per page
            // that the connection's cache misses. Mapped pages are the kernel's
            // page cache, counted in RSS only once touched and dropped first
            // under memory pressure.
            .pragma("mmap_size", "268435456");
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let location = if in_memory {
            "in memory".to_string()
        } else {
            let file = options.get_filename().to_path_buf();
            if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                    path: dir.display().to_string(),
                    source,
                })?;
            }
            file.display().to_string()
        };
        let single = || {
            SqlitePoolOptions::new()
                .acquire_timeout(Duration::from_secs(5))
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        };
        let (pool, writer) = if in_memory {
            // An in-memory database lives as long as one connection does, and is
            // that connection's alone: readers and the writer share it.
            let pool = single().connect_with(options).await?;
            (pool.clone(), pool)
        } else {
            let pool = SqlitePoolOptions::new()
                .acquire_timeout(Duration::from_secs(5))
                .max_connections(4)
                .connect_with(options.clone())
                .await?;
            (pool, single().connect_lazy_with(writer_options(options)))
        };
        // On the connection the pool just opened: a pool hands a returned
        // connection back a moment later, so a second statement through the pool
        // would open a second connection (a thread and a page cache, for good).
        let mut conn = pool.acquire().await?;
        migrations::migrator(migrations::SQLITE)
            .await?
            .run(&mut *conn)
            .await?;
        drop(conn);
        Ok(Self {
            pool,
            writer,
            location,
            known: super::KnownCalls::default(),
        })
    }

    fn describe(&self) -> String {
        format!("sqlite ({})", self.location)
    }

    /// The pool the recorder's writes go through.
    fn writer(&self) -> &Pool<Sqlite> {
        &self.writer
    }

    /// SQLite serves one replica: there is nobody to tell.
    async fn notify_calls(&self, _payload: &str) -> StoreResult<bool> {
        Ok(false)
    }

    async fn listen_calls(
        &self,
    ) -> StoreResult<Option<futures::stream::BoxStream<'static, String>>> {
        Ok(None)
    }
}

/// The writer's connection: a page cache of 1 MiB instead of SQLite's 2 MB, and
/// no memory map. What the writer touches is the tables' right edges and the
/// pages its batches change (40 to 60 a batch at saturation), and each page it
/// changes is copied into its cache either way; what it reads through a map of
/// the file stays mapped, so the process's RSS grew with the database. At a
/// 1000-call saturation this took RSS per live call from 15.6–16.1 to 14.3–14.9
/// KiB and the peak RSS from 124–134 to 72–85 MiB, at the same CPU per turn
/// within the runs' spread (BENCHMARKS.md, issue 17, fourteenth session).
fn writer_options(options: SqliteConnectOptions) -> SqliteConnectOptions {
    options
        .pragma("cache_size", "-1024")
        .pragma("mmap_size", "0")
}

impl_store!(SqliteStore, Sqlite, "sqlite");
impl_shared!(SqliteStore, calls: pool, rounds: writer);
impl_writes!(SqliteStore, Sqlite, "sqlite");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::store::shared::SharedState;

    /// A start (migrations), the replica's rounds and the recorder's reads of
    /// where calls' numbering stands leave one reader connection and the
    /// writer's: each connection is a thread and a page cache kept for as long
    /// as the server runs. The writer's cache is the smaller one.
    #[tokio::test]
    async fn a_start_the_rounds_and_numbering_hold_two_connections() {
        let dir = std::env::temp_dir().join(format!("voxrelay-sqlite-{}", std::process::id()));
        let url = format!("sqlite://{}", dir.join("calls.db").display());
        let store = SqliteStore::open(&url).await.unwrap();
        for round in 0..3 {
            let now = 1_000 + round;
            store.heartbeat("replica-a", 1_000, now).await.unwrap();
            store.reconcile(now - 500, now).await.unwrap();
            store.state_purge(now).await.unwrap();
        }
        // The recorder's reads of where calls' numbering stands, back to back.
        for _ in 0..3 {
            assert_eq!(store.next_seqs("CA1").await.unwrap().turn, 0);
            let many = store.next_seqs_many(&["CA1", "CA2"]).await.unwrap();
            assert!(many.is_empty(), "no call stored yet: {many:?}");
        }
        assert_eq!(store.pool.size(), 1, "reader connections");
        assert_eq!(store.writer.size(), 1, "writer connections");
        // The writer's page cache is bounded at 1 MiB and reads no map; the readers
        // keep SQLite's cache and the 256 MiB map.
        let setting = |pool: &Pool<Sqlite>, pragma: &'static str| {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>(pragma)
                    .fetch_one(&pool)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(setting(&store.writer, "PRAGMA cache_size").await, -1024);
        assert_eq!(setting(&store.writer, "PRAGMA mmap_size").await, 0);
        assert_eq!(setting(&store.pool, "PRAGMA mmap_size").await, 268_435_456);
        assert_eq!(setting(&store.pool, "PRAGMA cache_size").await, -2000);
        store.retire("replica-a").await.unwrap();
        store.pool.close().await;
        store.writer.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
