//! Migrations against real databases: SQLite files in a temporary directory, and a PostgreSQL
//! 15 server each test starts for itself (initdb as user `postgres` into a temporary directory,
//! stopped with `pg_ctl stop -m immediate` and reaped even when the test panics). Covers order,
//! idempotence, a failing migration rolled back alone, checksum and history disagreements, down
//! migrations, backups with retention, restore, the `command` engine, and a canary password
//! that must never appear in an error.

mod support;

use clarity::agent::migrate::{self, Database, MigrateError};
use clarity::secret::SecretString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), text).unwrap();
}

/// A release's migrations: 001 creates `users` with two rows, 002 adds `orders`, 003 adds a
/// column. Each has a down migration.
fn standard_migrations(dir: &Path) {
    write(
        dir,
        "001_users.up.sql",
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL);\n\
         INSERT INTO users (id, name) VALUES (1, 'ada'), (2, 'grace');\n",
    );
    write(dir, "001_users.down.sql", "DROP TABLE users;\n");
    write(
        dir,
        "002_orders.up.sql",
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL);\n",
    );
    write(dir, "002_orders.down.sql", "DROP TABLE orders;\n");
    write(
        dir,
        "010_email.up.sql",
        "ALTER TABLE users ADD COLUMN email TEXT;\n",
    );
    write(
        dir,
        "010_email.down.sql",
        "ALTER TABLE users DROP COLUMN email;\n",
    );
    write(dir, "README.md", "Migrations for the test application.\n");
}

/// 002 creates a table, then fails on line 3: its table must not survive.
const BAD_002: &str = "CREATE TABLE orders (id INTEGER PRIMARY KEY);\n\
                       INSERT INTO orders (id) VALUES (1);\n\
                       INSERT INTO no_such_table VALUES (1);\n";

/// One scenario, run against a database and a scratch directory for its migrations.
type Scenario = fn(&dyn Probe, &Path);

// ---------------------------------------------------------------------------------------------
// The scenarios, written once against a `Probe` that can look inside either database.

trait Probe {
    fn db(&self) -> Database<'_>;
    fn table_exists(&self, name: &str) -> bool;
    fn count(&self, table: &str) -> i64;
    fn exec(&self, sql: &str);
}

fn versions(probe: &dyn Probe) -> Vec<i64> {
    migrate::applied(&probe.db())
        .unwrap()
        .iter()
        .map(|r| r.version)
        .collect()
}

fn scenario_apply_in_order_once_and_roll_back_a_failure(probe: &dyn Probe, root: &Path) {
    let dir = root.join("migrations");
    standard_migrations(&dir);
    write(&dir, "002_orders.up.sql", BAD_002);
    let db = probe.db();

    let pending = migrate::pending(&dir, &db).unwrap();
    assert_eq!(
        pending.iter().map(|m| m.version).collect::<Vec<_>>(),
        [1, 2, 10]
    );

    let err = migrate::apply_pending(&dir, &db).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("002_orders.up.sql"), "{text}");
    assert!(text.contains("no_such_table"), "{text}");
    assert!(text.contains("line 3"), "{text}");
    match &err {
        MigrateError::Failed { completed, .. } => assert_eq!(completed, &[1]),
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_eq!(versions(probe), [1], "001 stays applied");
    assert!(probe.table_exists("users"));
    assert!(
        !probe.table_exists("orders"),
        "002's changes are rolled back"
    );

    // The fixed 002 (it never ran, so changing it is fine) and 010 run, in order.
    write(
        &dir,
        "002_orders.up.sql",
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL);\n",
    );
    let applied = migrate::apply_pending(&dir, &db).unwrap();
    assert_eq!(applied.versions, [2, 10]);
    assert_eq!(versions(probe), [1, 2, 10]);
    probe.exec("INSERT INTO users (id, name, email) VALUES (3, 'linus', 'l@example.org')");

    // Twice is a no-op.
    assert!(
        migrate::apply_pending(&dir, &db)
            .unwrap()
            .versions
            .is_empty()
    );
    assert!(migrate::pending(&dir, &db).unwrap().is_empty());
    assert_eq!(probe.count("users"), 3);

    let rows = migrate::applied(&db).unwrap();
    assert_eq!(rows[0].name, "users");
    assert_eq!(rows[0].checksum.len(), 64);
    assert!(rows[0].applied_at.ends_with('Z'), "{}", rows[0].applied_at);
}

fn scenario_disagreements_are_errors(probe: &dyn Probe, root: &Path) {
    let dir = root.join("migrations");
    standard_migrations(&dir);
    let db = probe.db();
    migrate::apply_pending(&dir, &db).unwrap();

    // A changed checksum of an applied migration names the file and both checksums.
    let original = std::fs::read_to_string(dir.join("001_users.up.sql")).unwrap();
    let old_sum = migrate::applied(&db).unwrap()[0].checksum.clone();
    write(&dir, "001_users.up.sql", &format!("{original}-- edited\n"));
    let new_sum = migrate::discover(&dir).unwrap()[0].checksum.clone();
    for err in [
        migrate::apply_pending(&dir, &db).unwrap_err(),
        migrate::pending(&dir, &db).unwrap_err(),
    ] {
        let text = err.to_string();
        assert!(
            matches!(err, MigrateError::ChecksumChanged { .. }),
            "{text}"
        );
        assert!(text.contains("001_users.up.sql"), "{text}");
        assert!(text.contains(&old_sum) && text.contains(&new_sum), "{text}");
    }
    write(&dir, "001_users.up.sql", &original);

    // An older artifact: an applied version is missing from the directory.
    let older = root.join("older");
    write(&older, "001_users.up.sql", &original);
    write(
        &older,
        "002_orders.up.sql",
        &std::fs::read_to_string(dir.join("002_orders.up.sql")).unwrap(),
    );
    let err = migrate::apply_pending(&older, &db).unwrap_err();
    assert!(
        matches!(err, MigrateError::AppliedMissing { version: 10, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("older than the database"), "{err}");

    // A new migration numbered below the newest applied one.
    write(&dir, "005_late.up.sql", "CREATE TABLE late (id INTEGER);\n");
    let err = migrate::apply_pending(&dir, &db).unwrap_err();
    assert!(
        matches!(err, MigrateError::OutOfOrder { newest: 10, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("005_late.up.sql"), "{err}");
    std::fs::remove_file(dir.join("005_late.up.sql")).unwrap();

    // A malformed name in the directory stops everything before the database is touched.
    write(&dir, "011_typo.sql", "SELECT 1;\n");
    let err = migrate::apply_pending(&dir, &db).unwrap_err();
    assert!(err.to_string().contains("011_typo.sql"), "{err}");
    std::fs::remove_file(dir.join("011_typo.sql")).unwrap();
    assert!(migrate::pending(&dir, &db).unwrap().is_empty());
}

fn scenario_down_migrations_revert(probe: &dyn Probe, root: &Path) {
    let dir = root.join("migrations");
    standard_migrations(&dir);
    let db = probe.db();
    migrate::apply_pending(&dir, &db).unwrap();

    // Reverse order whatever order they are asked in; unapplied versions are skipped.
    let reverted = migrate::down(&dir, &db, &[2, 10, 99]).unwrap();
    assert_eq!(reverted.versions, [10, 2]);
    assert_eq!(versions(probe), [1]);
    assert!(!probe.table_exists("orders"));
    // 010's down dropped the column: inserting without it works, with it fails.
    probe.exec("INSERT INTO users (id, name) VALUES (3, 'linus')");

    // Running the same revert again is a no-op.
    assert!(
        migrate::down(&dir, &db, &[2, 10])
            .unwrap()
            .versions
            .is_empty()
    );

    // Forward again, then a missing down file refuses before reverting anything.
    migrate::apply_pending(&dir, &db).unwrap();
    std::fs::remove_file(dir.join("002_orders.down.sql")).unwrap();
    let err = migrate::down(&dir, &db, &[2, 10]).unwrap_err();
    assert!(
        matches!(err, MigrateError::NoDown { version: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("restore the backup"), "{err}");
    assert_eq!(versions(probe), [1, 2, 10], "nothing reverted");
}

// ---------------------------------------------------------------------------------------------
// SQLite

struct Sqlite {
    path: PathBuf,
}

impl Probe for Sqlite {
    fn db(&self) -> Database<'_> {
        Database::Sqlite(&self.path)
    }
    fn table_exists(&self, name: &str) -> bool {
        let c = rusqlite::Connection::open(&self.path).unwrap();
        c.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [name],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
            == 1
    }
    fn count(&self, table: &str) -> i64 {
        let c = rusqlite::Connection::open(&self.path).unwrap();
        c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }
    fn exec(&self, sql: &str) {
        rusqlite::Connection::open(&self.path)
            .unwrap()
            .execute_batch(sql)
            .unwrap();
    }
}

fn sqlite(root: &Path) -> Sqlite {
    Sqlite {
        path: root.join("shared").join("app.db"),
    }
}

#[test]
fn sqlite_applies_in_order_once_and_rolls_back_a_failing_migration() {
    let root = tempfile::tempdir().unwrap();
    scenario_apply_in_order_once_and_roll_back_a_failure(&sqlite(root.path()), root.path());
}

#[test]
fn sqlite_changed_checksum_missing_version_and_bad_names_are_errors() {
    let root = tempfile::tempdir().unwrap();
    scenario_disagreements_are_errors(&sqlite(root.path()), root.path());
}

#[test]
fn sqlite_down_migrations_revert_in_reverse_order() {
    let root = tempfile::tempdir().unwrap();
    scenario_down_migrations_revert(&sqlite(root.path()), root.path());
}

#[test]
fn sqlite_backup_keeps_n_and_restore_puts_the_database_back() {
    let root = tempfile::tempdir().unwrap();
    let probe = sqlite(root.path());
    let db = probe.db();
    let backups = root.path().join("backups");

    // Before the first migration there is nothing to back up.
    assert_eq!(migrate::backup(&db, &backups, 2).unwrap(), None);

    let dir = root.path().join("migrations");
    write(
        &dir,
        "001_users.up.sql",
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);\nINSERT INTO users VALUES (1, 'ada');\n",
    );
    migrate::apply_pending(&dir, &db).unwrap();
    // WAL mode, as many services run: the backup and the restore must cope with it.
    probe.exec("PRAGMA journal_mode = WAL; INSERT INTO users VALUES (2, 'grace');");

    let first = migrate::backup(&db, &backups, 2).unwrap().unwrap();
    assert!(first.is_file());
    assert!(first.starts_with(&backups));
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&first).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "a backup holds data: private");

    // Retention: three backups with keep = 2 leave the two newest.
    let second = migrate::backup(&db, &backups, 2).unwrap().unwrap();
    let third = migrate::backup(&db, &backups, 2).unwrap().unwrap();
    let mut left: Vec<PathBuf> = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    left.sort();
    assert_eq!(left, [second.clone(), third.clone()]);

    // A migration, more data, then restore: back to exactly the backed-up state.
    write(
        &dir,
        "002_orders.up.sql",
        "CREATE TABLE orders (id INTEGER);\nDELETE FROM users WHERE id = 1;\n",
    );
    migrate::apply_pending(&dir, &db).unwrap();
    assert_eq!(probe.count("users"), 1);
    migrate::restore(&db, &third).unwrap();
    assert_eq!(probe.count("users"), 2);
    assert!(!probe.table_exists("orders"));
    assert_eq!(versions(&probe), [1]);
    // And the restored database migrates forward again.
    assert_eq!(migrate::apply_pending(&dir, &db).unwrap().versions, [2]);

    // A file that is not a database is refused before the live one is touched.
    let junk = root.path().join("junk.sqlite");
    std::fs::write(&junk, "not a database").unwrap();
    let err = migrate::restore(&db, &junk).unwrap_err();
    assert!(err.to_string().contains("junk.sqlite"), "{err}");
    assert_eq!(probe.count("users"), 1);
}

#[test]
fn command_engine_runs_in_the_release_with_env_and_reports_stderr() {
    let release = tempfile::tempdir().unwrap();
    let r = release.path();
    let script = "#!/bin/sh\n\
                  echo \"$APP_DB\" > \"$PWD/ran-with\"\n\
                  if [ \"$1\" = fail ]; then\n\
                    i=0; while [ $i -lt 30 ]; do echo \"noise $i\" >&2; i=$((i+1)); done\n\
                    echo \"cannot reach $APP_DB\" >&2\n\
                    exit 3\n\
                  fi\n";
    write(r, "migrate.sh", script);
    std::fs::set_permissions(
        r.join("migrate.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let env = vec![(
        "APP_DB".to_string(),
        SecretString::new("postgres://app:CANARY-db-93bd@db/app".into()),
    )];

    migrate::run_command(&["./migrate.sh".into()], r, &env).unwrap();
    let ran = std::fs::read_to_string(r.join("ran-with")).unwrap();
    assert!(
        ran.contains("CANARY-db-93bd"),
        "the command gets the real environment"
    );

    let err = migrate::run_command(&["./migrate.sh".into(), "fail".into()], r, &env).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("exited with status 3"), "{text}");
    assert!(text.contains("cannot reach (sensitive)"), "{text}");
    assert!(!text.contains("CANARY"), "{text}");
    assert!(!text.contains("noise 5\n"), "only the last lines: {text}");
    assert!(text.contains("noise 29"), "{text}");

    let err = migrate::run_command(&["./missing.sh".into()], r, &env).unwrap_err();
    assert!(err.to_string().contains("could not start"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const CANARY: &str = "CANARY-db-93bd";

/// A PostgreSQL server owned by one test: its data directory, socket and log live in a
/// temporary directory; the postmaster is this test's own child, so it is reaped when stopped.
struct PgServer {
    dir: tempfile::TempDir,
    port: u16,
    postmaster: Child,
    uid: nix::unistd::Uid,
    gid: nix::unistd::Gid,
}

impl PgServer {
    /// `None` (after `support::require` printed why) when this machine cannot run one.
    fn start() -> Option<PgServer> {
        if !support::require_root() {
            return None;
        }
        let initdb = Path::new(PG_BIN).join("initdb");
        if !support::require(
            initdb.is_file(),
            "PostgreSQL 15 server (Debian package `postgresql`)",
        ) {
            return None;
        }
        let user = nix::unistd::User::from_name("postgres").unwrap();
        if !support::require(user.is_some(), "the `postgres` system user") {
            return None;
        }
        let user = user.unwrap();
        let dir = tempfile::Builder::new()
            .prefix("clarity-pg-")
            .tempdir()
            .unwrap();
        nix::unistd::chown(dir.path(), Some(user.uid), Some(user.gid)).unwrap();
        let data = dir.path().join("data");

        let out = as_postgres(&mut Command::new(&initdb), user.uid, user.gid, dir.path())
            .args([
                "-A",
                "trust",
                "--no-sync",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The superuser is trusted over TCP (the tests administer with it); everyone else must
        // give a password, so a wrong one is really refused.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             host all postgres 127.0.0.1/32 trust\n\
             host all all 127.0.0.1/32 scram-sha-256\n",
        )
        .unwrap();

        let port = support::free_port();
        let log = std::fs::File::create(dir.path().join("postgres.log")).unwrap();
        nix::unistd::chown(
            &dir.path().join("postgres.log"),
            Some(user.uid),
            Some(user.gid),
        )
        .unwrap();
        let postmaster = as_postgres(
            &mut Command::new(Path::new(PG_BIN).join("postgres")),
            user.uid,
            user.gid,
            dir.path(),
        )
        .arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string(), "-k"])
        .arg(dir.path())
        .args(["-c", "fsync=off", "-c", "listen_addresses=127.0.0.1"])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
        let server = PgServer {
            dir,
            port,
            postmaster,
            uid: user.uid,
            gid: user.gid,
        };
        server.wait_ready();
        Some(server)
    }

    fn wait_ready(&self) {
        let start = Instant::now();
        loop {
            if postgres::Client::connect(&self.url("postgres", "postgres"), postgres::NoTls).is_ok()
            {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "postgres did not start: {}",
                std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn url(&self, user: &str, db: &str) -> String {
        format!("postgresql://{user}@127.0.0.1:{}/{db}", self.port)
    }

    fn admin(&self) -> postgres::Client {
        postgres::Client::connect(&self.url("postgres", "postgres"), postgres::NoTls).unwrap()
    }

    /// A fresh database for one scenario.
    fn database(&self, name: &str) -> SecretString {
        self.admin()
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        SecretString::new(format!(
            "host=127.0.0.1 port={} user=postgres dbname={name}",
            self.port
        ))
    }
}

fn as_postgres<'a>(
    cmd: &'a mut Command,
    uid: nix::unistd::Uid,
    gid: nix::unistd::Gid,
    cwd: &Path,
) -> &'a mut Command {
    use std::os::unix::process::CommandExt;
    cmd.uid(uid.as_raw()).gid(gid.as_raw()).current_dir(cwd)
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = as_postgres(
            &mut Command::new(Path::new(PG_BIN).join("pg_ctl")),
            self.uid,
            self.gid,
            self.dir.path(),
        )
        .arg("-D")
        .arg(self.dir.path().join("data"))
        .args(["stop", "-m", "immediate", "-w"])
        .output();
        // pg_ctl only signals; the postmaster is our child and must be reaped by us.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.postmaster.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    let _ = self.postmaster.kill();
                    let _ = self.postmaster.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

struct Pg {
    conn: SecretString,
}

impl Pg {
    fn client(&self) -> postgres::Client {
        postgres::Client::connect(self.conn.expose(), postgres::NoTls).unwrap()
    }
}

impl Probe for Pg {
    fn db(&self) -> Database<'_> {
        Database::Postgres(&self.conn)
    }
    fn table_exists(&self, name: &str) -> bool {
        self.client()
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
            .unwrap()
            .get(0)
    }
    fn count(&self, table: &str) -> i64 {
        self.client()
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .unwrap()
            .get(0)
    }
    fn exec(&self, sql: &str) {
        self.client().batch_execute(sql).unwrap();
    }
}

#[test]
fn postgres_scenarios_apply_rollback_disagreements_and_down() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let cases: [(&str, Scenario); 3] = [
        (
            "apply",
            scenario_apply_in_order_once_and_roll_back_a_failure,
        ),
        ("disagree", scenario_disagreements_are_errors),
        ("down", scenario_down_migrations_revert),
    ];
    for (name, scenario) in cases {
        let probe = Pg {
            conn: server.database(name),
        };
        let dir = root.path().join(name);
        scenario(&probe, &dir);
    }
}

#[test]
fn postgres_backup_with_pg_dump_keeps_n_and_restore_removes_later_objects() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let probe = Pg {
        conn: server.database("shop"),
    };
    let db = probe.db();
    let dir = root.path().join("migrations");
    let backups = root.path().join("backups");

    write(
        &dir,
        "001_users.up.sql",
        "CREATE SCHEMA billing;\n\
         CREATE TABLE billing.invoices (id serial PRIMARY KEY, amount numeric);\n\
         CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL);\n\
         CREATE TYPE mood AS ENUM ('ok', 'sad');\n\
         CREATE VIEW user_names AS SELECT name FROM users;\n\
         INSERT INTO users (name) VALUES ('ada'), ('grace');\n\
         INSERT INTO billing.invoices (amount) VALUES (10), (20);\n",
    );
    migrate::apply_pending(&dir, &db).unwrap();

    let mut made = Vec::new();
    for _ in 0..3 {
        made.push(
            migrate::backup(&db, &backups, 2)
                .unwrap()
                .expect("postgres always backs up"),
        );
    }
    let mut left: Vec<PathBuf> = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    left.sort();
    assert_eq!(left, made[1..], "retention keeps the two newest");
    let dump = std::fs::read_to_string(&made[2]).unwrap();
    assert!(
        dump.contains("CREATE TABLE public.users"),
        "a plain SQL dump"
    );

    // Migrations after the backup: new objects in public and in a new schema, changed data.
    write(
        &dir,
        "002_orders.up.sql",
        "CREATE TABLE orders (id serial PRIMARY KEY, user_id int REFERENCES users(id));\n\
         CREATE SCHEMA audit;\n\
         CREATE TABLE audit.log (line text);\n\
         CREATE FUNCTION twice(int) RETURNS int LANGUAGE sql AS 'SELECT $1 * 2';\n\
         DELETE FROM users WHERE name = 'ada';\n\
         DELETE FROM billing.invoices;\n",
    );
    migrate::apply_pending(&dir, &db).unwrap();
    assert_eq!(probe.count("users"), 1);

    migrate::restore(&db, &made[2]).unwrap();
    assert_eq!(probe.count("users"), 2);
    assert_eq!(probe.count("billing.invoices"), 2);
    assert_eq!(probe.count("user_names"), 2);
    assert!(!probe.table_exists("orders"));
    assert!(!probe.table_exists("audit.log"));
    assert_eq!(versions(&probe), [1]);
    // Nothing of 002 is left in the way: it applies again cleanly, and serials continue.
    assert_eq!(migrate::apply_pending(&dir, &db).unwrap().versions, [2]);
    probe.exec("INSERT INTO users (name) VALUES ('linus')");
    assert_eq!(probe.count("users"), 2);

    // A broken dump changes nothing: the restore is one transaction.
    let broken = root.path().join("broken.sql");
    std::fs::write(
        &broken,
        "CREATE TABLE restored_half (id int);\nTHIS IS NOT SQL;\n",
    )
    .unwrap();
    let err = migrate::restore(&db, &broken).unwrap_err();
    assert!(err.to_string().contains("broken.sql"), "{err}");
    assert!(
        probe.table_exists("orders"),
        "the failed restore dropped nothing"
    );
    assert!(!probe.table_exists("restored_half"));
}

#[test]
fn postgres_canary_password_never_appears_in_errors() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let mut admin = server.admin();
    admin
        .batch_execute("CREATE ROLE app LOGIN PASSWORD 'right-password'")
        .unwrap();
    admin
        .batch_execute("CREATE DATABASE app OWNER app")
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("migrations");
    write(&dir, "001_a.up.sql", "CREATE TABLE a (id int);\n");
    let closed = support::free_port();
    let conns = [
        // Wrong password, both spellings.
        format!(
            "host=127.0.0.1 port={} user=app password={CANARY} dbname=app",
            server.port
        ),
        format!("postgresql://app:{CANARY}@127.0.0.1:{}/app", server.port),
        // Nobody listening.
        format!(
            "host=127.0.0.1 port={closed} user=app password={CANARY} dbname=app connect_timeout=2"
        ),
        format!("postgresql://app:{CANARY}@127.0.0.1:{closed}/app"),
        // A malformed string that still carries the password.
        format!("host=127.0.0.1 port=notaport password={CANARY}"),
    ];
    for conn in conns {
        let secret = SecretString::new(conn.clone());
        let db = Database::Postgres(&secret);
        let errors = [
            migrate::pending(&dir, &db).unwrap_err(),
            migrate::apply_pending(&dir, &db).unwrap_err(),
            migrate::down(&dir, &db, &[1]).unwrap_err(),
            migrate::backup(&db, &root.path().join("backups"), 3).unwrap_err(),
            migrate::restore(&db, &dir.join("001_a.up.sql")).unwrap_err(),
        ];
        for err in errors {
            let shown = format!("{err} | {err:?} | {db:?} | {}", db.describe());
            assert!(
                !shown.contains(CANARY),
                "password leaked for {conn}: {shown}"
            );
            assert!(!shown.contains("password="), "{shown}");
        }
    }

    // The right password works, and a failing migration through it still hides it.
    let good = SecretString::new(format!(
        "postgresql://app:right-password@127.0.0.1:{}/app",
        server.port
    ));
    let db = Database::Postgres(&good);
    assert_eq!(migrate::apply_pending(&dir, &db).unwrap().versions, [1]);
    // pg_dump and psql authenticate through PGPASSWORD, as the owner (not a superuser).
    let backup = migrate::backup(&db, &root.path().join("backups"), 3)
        .unwrap()
        .unwrap();
    write(
        &dir,
        "002_b.up.sql",
        "CREATE TABLE b (id int);\nSELECT 'right-password'::int;\n",
    );
    let err = migrate::apply_pending(&dir, &db).unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(shown.contains("002_b.up.sql"), "{shown}");
    assert!(!shown.contains("right-password"), "{shown}");
    assert!(
        shown.contains(&format!("postgresql 127.0.0.1:{}/app", server.port)),
        "{shown}"
    );
    std::fs::remove_file(dir.join("002_b.up.sql")).unwrap();
    write(&dir, "002_c.up.sql", "CREATE TABLE c (id int);\n");
    migrate::apply_pending(&dir, &db).unwrap();
    migrate::restore(&db, &backup).unwrap();
    assert_eq!(
        migrate::applied(&db)
            .unwrap()
            .iter()
            .map(|r| r.version)
            .collect::<Vec<_>>(),
        [1]
    );
}
