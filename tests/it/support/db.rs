//! Test databases: a fresh SQLite file for every test, and, when
//! `TEST_DATABASE_URL` names a PostgreSQL server, a fresh database on it per test
//! (dropped afterwards; ones left by crashed runs are dropped by the next run).

use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::Connection;
use sqlx::postgres::PgConnection;
use tokio::sync::OnceCell;

use crate::support::temp_sqlite_url;

/// A database a test owns.
pub struct TestDb {
    pub url: String,
    /// For PostgreSQL: the server URL to drop the database through.
    pg: Option<(String, String)>,
}

impl TestDb {
    pub fn sqlite() -> Self {
        Self {
            url: temp_sqlite_url(),
            pg: None,
        }
    }

    /// A fresh PostgreSQL database, or `None` (with a printed notice) when
    /// `TEST_DATABASE_URL` is not set.
    pub async fn postgres(test: &str) -> Option<Self> {
        let Ok(admin) = std::env::var("TEST_DATABASE_URL") else {
            eprintln!("skipping {test}: TEST_DATABASE_URL is not set");
            // Once per run, past the test harness's output capture, so it shows.
            static NOTICE: std::sync::Once = std::sync::Once::new();
            NOTICE.call_once(|| {
                use std::io::Write as _;
                let _ = writeln!(
                    std::io::stderr(),
                    "note: PostgreSQL store tests skipped: set TEST_DATABASE_URL \
                     (e.g. postgres://postgres@127.0.0.1:5432/test) to run them"
                );
            });
            return None;
        };
        static CLEANED: OnceCell<()> = OnceCell::const_new();
        CLEANED.get_or_init(|| drop_stale(&admin)).await;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "vxtest_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut conn = PgConnection::connect(&admin)
            .await
            .expect("TEST_DATABASE_URL is reachable");
        sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name}"))
            .execute(&mut conn)
            .await
            .expect("drop an old test database");
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create a test database");
        let _ = conn.close().await;
        Some(Self {
            url: with_database(&admin, &name),
            pg: Some((admin, name)),
        })
    }

    pub fn backend(&self) -> &'static str {
        if self.pg.is_some() {
            "postgres"
        } else {
            "sqlite"
        }
    }

    /// Drops a PostgreSQL test database (SQLite files are swept by later runs).
    pub async fn cleanup(self) {
        if let Some((admin, name)) = self.pg
            && let Ok(mut conn) = PgConnection::connect(&admin).await
        {
            let _ = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await;
            let _ = conn.close().await;
        }
    }
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[authority_start..]
        .find('/')
        .map(|i| authority_start + i)
        .unwrap_or(base.len());
    let mut out = format!("{}/{name}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Drops test databases whose test process is gone.
async fn drop_stale(admin: &str) {
    let Ok(mut conn) = PgConnection::connect(admin).await else {
        return;
    };
    let names: Vec<(String,)> =
        sqlx::query_as("SELECT datname FROM pg_database WHERE datname LIKE 'vxtest\\_%'")
            .fetch_all(&mut conn)
            .await
            .unwrap_or_default();
    for (name,) in names {
        let pid = name.split('_').nth(1).unwrap_or("");
        let alive = !pid.is_empty() && std::path::Path::new("/proc").join(pid).exists();
        if !alive {
            let _ = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await;
        }
    }
    let _ = conn.close().await;
}

#[test]
fn database_names_are_replaced() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("postgres://u:p@h/test?sslmode=disable", "x"),
        "postgres://u:p@h/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
}

/// Defines two tests running `check(&TestDb)`: on SQLite, and on PostgreSQL when
/// `TEST_DATABASE_URL` is set (skipped with a notice otherwise).
macro_rules! on_both {
    ($sqlite:ident, $postgres:ident, $check:ident) => {
        #[tokio::test]
        async fn $sqlite() {
            crate::support::init_logs();
            let db = crate::support::db::TestDb::sqlite();
            $check(&db).await;
            db.cleanup().await;
        }

        #[tokio::test]
        async fn $postgres() {
            crate::support::init_logs();
            let Some(db) = crate::support::db::TestDb::postgres(stringify!($postgres)).await else {
                return;
            };
            $check(&db).await;
            db.cleanup().await;
        }
    };
}

pub(crate) use on_both;
