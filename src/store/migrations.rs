//! The SQL migrations in `migrations/sqlite` and `migrations/postgres`, compiled into
//! the binary (a Docker image needs no extra files) and applied at start by sqlx's
//! migrator, which records them in `_sqlx_migrations` and refuses edited ones.

use std::borrow::Cow;

use futures::future::BoxFuture;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

/// One migration: version, description, SQL.
type Embedded = (i64, &'static str, &'static str);

/// Every SQLite migration, in order. A new file in `migrations/sqlite` goes here too
/// (a test checks the folder and this list agree).
pub const SQLITE: &[Embedded] = &[
    (
        1,
        "calls",
        include_str!("../../migrations/sqlite/0001_calls.sql"),
    ),
    (
        2,
        "shared_state",
        include_str!("../../migrations/sqlite/0002_shared_state.sql"),
    ),
    (
        3,
        "llm_first_token",
        include_str!("../../migrations/sqlite/0003_llm_first_token.sql"),
    ),
    (
        4,
        "call_agent",
        include_str!("../../migrations/sqlite/0004_call_agent.sql"),
    ),
];

/// Every PostgreSQL migration, in order (same rule as [`SQLITE`]).
pub const POSTGRES: &[Embedded] = &[
    (
        1,
        "calls",
        include_str!("../../migrations/postgres/0001_calls.sql"),
    ),
    (
        2,
        "shared_state",
        include_str!("../../migrations/postgres/0002_shared_state.sql"),
    ),
    (
        3,
        "llm_first_token",
        include_str!("../../migrations/postgres/0003_llm_first_token.sql"),
    ),
    (
        4,
        "call_agent",
        include_str!("../../migrations/postgres/0004_call_agent.sql"),
    ),
];

/// A list of embedded migrations, as sqlx's migrator reads them.
#[derive(Debug)]
struct Source(&'static [Embedded]);

impl MigrationSource<'static> for Source {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|&(version, description, sql)| {
                    Migration::new(
                        version,
                        Cow::Borrowed(description),
                        MigrationType::Simple,
                        Cow::Borrowed(sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// The migrator for one list.
pub async fn migrator(list: &'static [Embedded]) -> Result<Migrator, sqlx::migrate::MigrateError> {
    Migrator::new(Source(list)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &str) -> Vec<(i64, String)> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(dir);
        let mut found: Vec<(i64, String)> = std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter_map(|name| {
                let stem = name.strip_suffix(".sql")?;
                let (version, description) = stem.split_once('_')?;
                Some((version.parse().ok()?, description.to_string()))
            })
            .collect();
        found.sort();
        found
    }

    #[test]
    fn every_migration_file_is_embedded_for_both_databases() {
        for (dir, list) in [("sqlite", SQLITE), ("postgres", POSTGRES)] {
            let embedded: Vec<(i64, String)> =
                list.iter().map(|(v, d, _)| (*v, d.to_string())).collect();
            assert_eq!(
                files(dir),
                embedded,
                "migrations/{dir} and the embedded list"
            );
        }
        let sqlite: Vec<i64> = SQLITE.iter().map(|m| m.0).collect();
        let postgres: Vec<i64> = POSTGRES.iter().map(|m| m.0).collect();
        assert_eq!(sqlite, postgres, "both databases have the same versions");
    }
}
