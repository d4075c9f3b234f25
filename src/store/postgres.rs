//! The PostgreSQL backend (`DATABASE_URL=postgres://…`, e.g. Railway's Postgres), for
//! deploys without a lasting disk or with several replicas. The migrator takes an
//! advisory lock, so replicas starting together apply each migration once.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Pool, Postgres};

use super::backend::impl_store;
use super::shared::impl_shared;
use super::writes::impl_writes;
use super::{StoreResult, migrations};

/// The longest any statement may run (PostgreSQL's `statement_timeout`).
pub const STATEMENT_TIMEOUT: &str = "10s";

/// Call records in a PostgreSQL database.
pub struct PgStore {
    pool: Pool<Postgres>,
    location: String,
    /// Calls whose row exists (records for them skip the existence check).
    known: super::KnownCalls,
}

impl PgStore {
    /// Connects to `url` and applies the migrations.
    pub async fn open(url: &str) -> StoreResult<Self> {
        // A hung database must not hold the one writer (or an API request) forever:
        // every statement is cut off after STATEMENT_TIMEOUT on the server side.
        let options = PgConnectOptions::from_str(url)?
            .application_name("voxrelay")
            .options([("statement_timeout", STATEMENT_TIMEOUT)]);
        let location = format!(
            "{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or("")
        );
        let pool = PgPoolOptions::new()
            .max_connections(5)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        migrations::migrator(migrations::POSTGRES)
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
        format!("postgres ({})", self.location)
    }

    /// The pool the recorder's writes go through: the same as everyone's (the
    /// server keeps each connection's cache, and a batch takes one for itself).
    fn writer(&self) -> &Pool<Postgres> {
        &self.pool
    }

    async fn notify_calls(&self, payload: &str) -> StoreResult<bool> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(super::CALLS_CHANNEL)
            .bind(payload)
            .execute(&self.pool)
            .await?;
        Ok(true)
    }

    /// A connection of its own, `LISTEN`ing on the channel; sqlx reconnects it
    /// when it drops (notifications sent meanwhile are lost).
    async fn listen_calls(
        &self,
    ) -> StoreResult<Option<futures::stream::BoxStream<'static, String>>> {
        use futures::StreamExt as _;
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
        listener.listen(super::CALLS_CHANNEL).await?;
        let stream = futures::stream::unfold(listener, |mut listener| async move {
            loop {
                match listener.recv().await {
                    Ok(note) => return Some((note.payload().to_string(), listener)),
                    Err(sqlx::Error::PoolClosed) => return None,
                    Err(e) => {
                        tracing::warn!(error = %e, "lost the live-call notifications; reconnecting");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(Some(stream.boxed()))
    }
}

impl_store!(PgStore, Postgres, "postgres");
impl_shared!(PgStore, calls: pool, rounds: pool);
impl_writes!(PgStore, Postgres, "postgres");
