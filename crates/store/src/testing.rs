//! Fresh databases for tests of this and other crates: a temporary SQLite directory, or a new
//! database on the PostgreSQL server at `CONFIDANT_TEST_POSTGRES_URL` (default: the local
//! server, `postgres://postgres@127.0.0.1:5432/postgres`).

use std::path::PathBuf;

use rand_core::{OsRng, RngCore};
use sqlx::Connection;

use crate::Dialect;

pub const POSTGRES_URL_VARIABLE: &str = "CONFIDANT_TEST_POSTGRES_URL";
const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database that exists for one test. Call [`TestDatabase::finish`] at the end; a
/// panicking test leaves a temporary directory or database behind for inspection.
pub struct TestDatabase {
    pub dialect: Dialect,
    url: String,
    sqlite_dir: Option<PathBuf>,
    postgres: Option<(String, String)>,
}

fn random_name() -> String {
    format!("confidant_test_{:016x}", OsRng.next_u64())
}

impl TestDatabase {
    pub async fn create(dialect: Dialect) -> Self {
        match dialect {
            Dialect::Sqlite => Self::sqlite(),
            Dialect::Postgres => Self::postgres().await,
        }
    }

    pub fn sqlite() -> Self {
        let dir = std::env::temp_dir().join(random_name());
        std::fs::create_dir_all(&dir).expect("temporary directory");
        Self {
            dialect: Dialect::Sqlite,
            url: format!("sqlite://{}", dir.join("confidant.db").display()),
            sqlite_dir: Some(dir),
            postgres: None,
        }
    }

    pub async fn postgres() -> Self {
        let admin = std::env::var(POSTGRES_URL_VARIABLE)
            .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
        let name = random_name();
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| {
                panic!("cannot reach PostgreSQL at {admin} (set {POSTGRES_URL_VARIABLE}): {e}")
            });
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let base = admin
            .rsplit_once('/')
            .map_or(admin.as_str(), |(base, _)| base);
        Self {
            dialect: Dialect::Postgres,
            url: format!("{base}/{name}"),
            sqlite_dir: None,
            postgres: Some((admin.clone(), name)),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The SQLite data directory, for tests that look at files.
    pub fn dir(&self) -> Option<&std::path::Path> {
        self.sqlite_dir.as_deref()
    }

    /// Removes the database; every store on it must be closed first.
    pub async fn finish(self) {
        if let Some(dir) = &self.sqlite_dir {
            std::fs::remove_dir_all(dir).ok();
        }
        if let Some((admin, name)) = &self.postgres
            && let Ok(mut conn) = sqlx::PgConnection::connect(admin).await
        {
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await
                .ok();
        }
    }
}
