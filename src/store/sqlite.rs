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
    pool: Pool<Sqlite>,
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
            .busy_timeout(Duration::from_secs(5));
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
        let mut pool = SqlitePoolOptions::new().acquire_timeout(Duration::from_secs(5));
        pool = if in_memory {
            // An in-memory database lives as long as one connection does.
            pool.max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            pool.max_connections(4)
        };
        let pool = pool.connect_with(options).await?;
        migrations::migrator(migrations::SQLITE)
            .await?
            .run(&pool)
            .await?;
        Ok(Self {
            pool,
            location,
            known: super::KnownCalls::default(),
        })
    }

    fn describe(&self) -> String {
        format!("sqlite ({})", self.location)
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

impl_store!(SqliteStore, Sqlite, "sqlite");
impl_shared!(SqliteStore);
impl_writes!(SqliteStore, Sqlite, "sqlite");
