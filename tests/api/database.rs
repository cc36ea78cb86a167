//! The engine the suite runs on, and each test's own database.
//!
//! `COBALT_TEST_ENGINE=postgres` runs every test on PostgreSQL
//! (default: `sqlite`). Each test then gets a database of its own, cloned
//! from a migrated template, on the server `COBALT_TEST_POSTGRES_URL`
//! names (default `postgres://postgres@127.0.0.1:5432/postgres`); it is
//! dropped when the test ends. `ci/test.sh` runs the suite once per engine.

use std::ops::Deref;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::any::AnyPoolOptions;
use sqlx::postgres::PgConnection;
use sqlx::{AnyPool, Connection};
use tempfile::TempDir;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// The engine this run of the suite tests.
pub fn engine() -> Engine {
    match std::env::var("COBALT_TEST_ENGINE").as_deref() {
        Ok("postgres") => Engine::Postgres,
        Ok("sqlite") | Err(_) => Engine::Sqlite,
        Ok(other) => panic!("COBALT_TEST_ENGINE={other}: use sqlite or postgres"),
    }
}

/// Whether this run tests `wanted`; says loudly that `test` is skipped
/// when it does not (the other pass of `ci/test.sh` runs it).
pub fn runs_on(wanted: Engine, test: &str) -> bool {
    let runs = engine() == wanted;
    if !runs {
        skipped(&format!(
            "{test} on {:?}: it tests the {wanted:?} engine only, in that pass of ci/test.sh",
            engine()
        ));
    }
    runs
}

/// Says that a test was skipped and why: on stderr (shown when the test is
/// run alone or fails), and in the file `COBALT_TEST_SKIP_LOG` names, which
/// `ci/test.sh` prints after each pass, since the test harness hides the
/// output of tests that pass.
pub fn skipped(what: &str) {
    eprintln!("SKIPPED {what}");
    if let Some(log) = std::env::var_os("COBALT_TEST_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            let _ = writeln!(file, "{what}");
        }
    }
}

fn admin_url() -> String {
    std::env::var("COBALT_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// `admin_url` with another database.
pub fn postgres_url(database: &str) -> String {
    let admin = admin_url();
    let base = admin
        .rsplit_once('/')
        .map_or(admin.as_str(), |(base, _)| base);
    format!("{base}/{database}")
}

/// A test's files (logs, certificates, the SQLite file) and its database.
pub struct Workspace {
    temp: TempDir,
    database_url: String,
    /// The PostgreSQL database of this test, dropped with it.
    postgres: Option<String>,
}

/// A workspace on the engine under test.
pub fn workspace() -> Workspace {
    workspace_on(engine())
}

pub fn workspace_on(engine: Engine) -> Workspace {
    let temp = TempDir::new().unwrap();
    match engine {
        Engine::Sqlite => Workspace {
            database_url: format!("sqlite://{}", temp.path().join("receiver.db").display()),
            temp,
            postgres: None,
        },
        Engine::Postgres => {
            let name = blocking(create_database);
            Workspace {
                database_url: postgres_url(&name),
                temp,
                postgres: Some(name),
            }
        }
    }
}

/// A workspace on a new, empty PostgreSQL database: nothing migrated.
pub fn empty_postgres_workspace() -> Workspace {
    let name = blocking(|| async {
        let name = unique_name();
        let mut admin = PgConnection::connect(&admin_url()).await.unwrap();
        sqlx::query(&format!("create database {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
        name
    });
    Workspace {
        database_url: postgres_url(&name),
        temp: TempDir::new().unwrap(),
        postgres: Some(name),
    }
}

impl Deref for Workspace {
    type Target = TempDir;

    fn deref(&self) -> &TempDir {
        &self.temp
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if let Some(name) = self.postgres.take() {
            blocking(move || async move {
                let mut admin = PgConnection::connect(&admin_url()).await.unwrap();
                let _ = sqlx::query(&format!("drop database if exists {name} with (force)"))
                    .execute(&mut admin)
                    .await;
            });
        }
    }
}

impl Workspace {
    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    pub fn engine(&self) -> Engine {
        if self.postgres.is_some() {
            Engine::Postgres
        } else {
            Engine::Sqlite
        }
    }

    /// The SQLite file (on the SQLite engine).
    pub fn sqlite_path(&self) -> std::path::PathBuf {
        assert_eq!(self.engine(), Engine::Sqlite, "a SQLite-only helper");
        self.temp.path().join("receiver.db")
    }

    /// A connection pool to the database for assertions and for acting as
    /// an operator would, in SQL both engines take (`$1` placeholders).
    pub async fn sql(&self) -> AnyPool {
        sqlx::any::install_default_drivers();
        AnyPoolOptions::new()
            .max_connections(2)
            .connect(&self.database_url)
            .await
            .unwrap()
    }

    /// How many bytes the database holds: its pages (SQLite, the WAL's
    /// included), or PostgreSQL's size of the database.
    pub async fn size_bytes(&self) -> i64 {
        let sql = match self.engine() {
            Engine::Sqlite => {
                "select page_count * page_size from pragma_page_count(), pragma_page_size()"
            }
            Engine::Postgres => "select pg_database_size(current_database())",
        };
        let db = self.sql().await;
        let bytes = sqlx::query_scalar(sql).fetch_one(&db).await.unwrap();
        db.close().await;
        bytes
    }

    pub async fn count(&self, table: &str) -> i64 {
        let db = self.sql().await;
        let count = sqlx::query_scalar(&format!("select count(*) from {table}"))
            .fetch_one(&db)
            .await
            .unwrap();
        db.close().await;
        count
    }

    /// Each event id in arrival order, with whether its payload is kept.
    pub async fn payloads_kept(&self) -> Vec<(String, bool)> {
        let sql = match self.engine() {
            Engine::Sqlite => {
                "select event_id, case when payload <> '' or sealed_payload is not null then 1 else 0 end
                 from events order by seq"
            }
            Engine::Postgres => {
                "select e.event_id, case when p.seq is null then 0 else 1 end
                 from events e left join payloads p on p.seq = e.seq order by e.seq"
            }
        };
        let db = self.sql().await;
        let rows: Vec<(String, i32)> = sqlx::query_as(sql).fetch_all(&db).await.unwrap();
        db.close().await;
        rows.into_iter().map(|(id, kept)| (id, kept == 1)).collect()
    }

    /// The payload kept for `event_id`, if any.
    pub async fn payload_of(&self, event_id: &str) -> Option<String> {
        let sql = match self.engine() {
            Engine::Sqlite => "select payload from events where event_id = $1 and payload <> ''",
            Engine::Postgres => {
                "select p.payload from events e join payloads p on p.seq = e.seq where e.event_id = $1"
            }
        };
        let db = self.sql().await;
        let payload = sqlx::query_scalar(sql)
            .bind(event_id)
            .fetch_optional(&db)
            .await
            .unwrap();
        db.close().await;
        payload
    }

    /// Holds the database's write lock from another session until released:
    /// SQLite's one write lock, or PostgreSQL's table locks that stop every
    /// write a delivery or the readiness probe makes (reads go on).
    pub async fn hold_write_lock(&self) -> WriteLock {
        sqlx::any::install_default_drivers();
        let mut holder = sqlx::AnyConnection::connect(&self.database_url)
            .await
            .unwrap();
        let statements: &[&str] = match self.engine() {
            Engine::Sqlite => &["begin immediate"],
            Engine::Postgres => &[
                "begin",
                "lock table events, jobs, writer_probe, audit_log in exclusive mode",
            ],
        };
        for statement in statements {
            sqlx::query(statement).execute(&mut holder).await.unwrap();
        }
        WriteLock(holder)
    }
}

/// A write lock held by another session.
pub struct WriteLock(sqlx::AnyConnection);

impl WriteLock {
    pub async fn release(mut self) {
        sqlx::query("rollback").execute(&mut self.0).await.unwrap();
        self.0.close().await.unwrap();
    }
}

/// Runs `work` to completion on a runtime of its own, from sync code or
/// from inside a test's runtime alike.
fn blocking<T: Send + 'static, F: Future<Output = T>>(
    work: impl FnOnce() -> F + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(work())
    })
    .join()
    .unwrap()
}

/// Creates a database for one test from the migrated template, making the
/// template first if this build's migrations have none yet.
async fn create_database() -> String {
    static TEMPLATE: OnceLock<String> = OnceLock::new();
    let mut admin = PgConnection::connect(&admin_url())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "COBALT_TEST_ENGINE=postgres, but PostgreSQL at {} cannot be reached ({e}); \
             start it, or set COBALT_TEST_POSTGRES_URL",
                admin_url()
            )
        });
    let template = match TEMPLATE.get() {
        Some(template) => template.clone(),
        None => {
            let template = make_template(&mut admin).await;
            TEMPLATE.get_or_init(|| template).clone()
        }
    };
    let name = unique_name();
    // Another session copying the template at the same moment makes
    // PostgreSQL refuse ("being accessed by other users"): try again.
    for attempt in 0.. {
        match sqlx::query(&format!("create database {name} template {template}"))
            .execute(&mut admin)
            .await
        {
            Ok(_) => break,
            Err(e) if attempt < 50 && e.to_string().contains("being accessed by other users") => {
                tokio::time::sleep(std::time::Duration::from_millis(20 + attempt * 10)).await;
            }
            Err(e) => panic!("creating the test database {name}: {e}"),
        }
    }
    admin.close().await.unwrap();
    name
}

/// The template for this build's migrations, named by their hash so that a
/// changed migration makes a new one. Test processes running at once take
/// turns under an advisory lock.
async fn make_template(admin: &mut PgConnection) -> String {
    static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for migration in MIGRATOR.iter() {
        for byte in migration.checksum.iter() {
            hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    let template = format!("cobalt_test_template_{hash:016x}");
    sqlx::query("select pg_advisory_lock(7244105320)")
        .execute(&mut *admin)
        .await
        .unwrap();
    let exists: bool =
        sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
            .bind(&template)
            .fetch_one(&mut *admin)
            .await
            .unwrap();
    if !exists {
        let building = format!("{template}_building");
        sqlx::query(&format!("drop database if exists {building} with (force)"))
            .execute(&mut *admin)
            .await
            .unwrap();
        sqlx::query(&format!("create database {building}"))
            .execute(&mut *admin)
            .await
            .unwrap();
        let mut db = PgConnection::connect(&postgres_url(&building))
            .await
            .unwrap();
        MIGRATOR.run(&mut db).await.unwrap();
        db.close().await.unwrap();
        sqlx::query(&format!("alter database {building} rename to {template}"))
            .execute(&mut *admin)
            .await
            .unwrap();
    }
    sqlx::query("select pg_advisory_unlock(7244105320)")
        .execute(&mut *admin)
        .await
        .unwrap();
    template
}

/// A database name no other test, process or run uses.
fn unique_name() -> String {
    use std::hash::{BuildHasher, RandomState};
    static CREATED: AtomicUsize = AtomicUsize::new(0);
    format!(
        "cobalt_test_{}_{}_{:x}",
        std::process::id(),
        CREATED.fetch_add(1, Ordering::Relaxed),
        RandomState::new().hash_one(std::time::SystemTime::now())
    )
}
