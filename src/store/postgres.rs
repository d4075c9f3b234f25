//! The PostgreSQL backend (`DATABASE_URL=postgres://…`, e.g. Railway's Postgres), for
//! deploys without a lasting disk or with several replicas. The migrator takes an
//! advisory lock, so replicas starting together apply each migration once.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Pool, Postgres};

use super::shared::impl_shared;
use super::sql::impl_store;
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
}

impl_store!(PgStore, Postgres, "postgres");
impl_shared!(PgStore);
