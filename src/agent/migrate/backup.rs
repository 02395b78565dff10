//! Database backups before migrations, and putting one back: SQLite through `VACUUM INTO` and
//! a copy over the file, PostgreSQL through `pg_dump` and `psql`. Backups are private files with
//! names that sort by time, written under a temporary name and renamed, and pruned to the
//! newest few. The password reaches the tools only through `PGPASSWORD` in their own
//! environment; every message passes through the redactor.

use super::*;

/// Backs `db` up into `backups_dir` (created with mode 0700) and keeps the newest `keep`
/// backups there (at least the new one), deleting older ones. SQLite: a consistent copy made
/// with `VACUUM INTO` (`.sqlite`); no backup when the file does not exist yet. PostgreSQL: a
/// plain-SQL `pg_dump` (`.sql`). A backup is written under a temporary name and renamed, so a
/// file with a backup name is always complete. Returns the new backup's path.
pub fn backup(db: &Database, backups_dir: &Path, keep: usize) -> Result<Option<PathBuf>> {
    let database = db.describe();
    let fail = |message: String| MigrateError::Backup {
        database: database.clone(),
        message,
    };
    create_private_dir(backups_dir).map_err(|e| fail(format!("{}: {e}", backups_dir.display())))?;
    let ext = match db {
        Database::Sqlite(_) => "sqlite",
        Database::Postgres(_) => "sql",
    };
    let name = unique_backup_name(backups_dir, ext);
    let final_path = backups_dir.join(&name);
    let tmp = backups_dir.join(format!(".{name}.partial"));
    let _ = std::fs::remove_file(&tmp);
    let made = match db {
        Database::Sqlite(path) => {
            if !path.exists() {
                return Ok(None);
            }
            sqlite_backup(path, &tmp)
        }
        Database::Postgres(secret) => pg_dump(secret, &tmp),
    };
    if let Err(message) = made {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(message));
    }
    std::fs::rename(&tmp, &final_path)
        .map_err(|e| fail(format!("{}: {e}", final_path.display())))?;
    crate::atomic_file::sync_dir(backups_dir);
    prune_backups(backups_dir, keep.max(1))
        .map_err(|e| fail(format!("removing old backups: {e}")))?;
    Ok(Some(final_path))
}

/// Puts `backup` (made by [`backup`] for the same database) back. SQLite: the copy replaces the
/// database file (stop the service first: a process holding the old file keeps writing to it).
/// PostgreSQL: in one transaction through `psql`, every table, view, sequence, function, type
/// and extension in `public` and every other non-system schema is dropped (including what
/// migrations created after the backup), then the dump is replayed; any error leaves the
/// database as it was.
pub fn restore(db: &Database, backup: &Path) -> Result<()> {
    let fail = |message: String| MigrateError::Restore {
        database: db.describe(),
        backup: backup.to_path_buf(),
        message,
    };
    if !backup.is_file() {
        return Err(fail("no such backup file".into()));
    }
    match db {
        Database::Sqlite(path) => sqlite_restore(path, backup),
        Database::Postgres(secret) => pg_restore(secret, backup),
    }
    .map_err(fail)
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// `YYYYMMDDTHHMMSS.NNNNNNNNNZ.EXT`: sorts by time as text, which retention relies on.
fn unique_backup_name(dir: &Path, ext: &str) -> String {
    let now = crate::clock::since_epoch();
    let stamp: String = crate::clock::rfc3339(now.as_secs())
        .chars()
        .filter(|c| !matches!(c, '-' | ':' | 'Z'))
        .collect();
    let mut nanos = now.subsec_nanos();
    loop {
        let name = format!("{stamp}.{nanos:09}Z.{ext}");
        if !dir.join(&name).exists() {
            return name;
        }
        // Two backups within one clock tick: the next nanosecond keeps the order.
        nanos += 1;
    }
}

fn is_backup_name(name: &str) -> bool {
    let Some((stamp, ext)) = name.split_once("Z.") else {
        return false;
    };
    let b = stamp.as_bytes();
    matches!(ext, "sqlite" | "sql")
        && b.len() == 25
        && b[8] == b'T'
        && b[15] == b'.'
        && b.iter()
            .enumerate()
            .all(|(i, c)| matches!(i, 8 | 15) || c.is_ascii_digit())
}

fn prune_backups(dir: &Path, keep: usize) -> std::io::Result<()> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| is_backup_name(n))
        .collect();
    names.sort();
    let excess = names.len().saturating_sub(keep);
    for name in &names[..excess] {
        std::fs::remove_file(dir.join(name))?;
    }
    Ok(())
}

fn sync_file(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

fn sqlite_backup(db: &Path, to: &Path) -> std::result::Result<(), String> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| e.to_string())?;
    conn.busy_timeout(SQLITE_BUSY_TIMEOUT)
        .map_err(|e| e.to_string())?;
    let target = to.to_str().ok_or("the backup path is not UTF-8")?;
    // VACUUM INTO reads one consistent snapshot, even while the service writes.
    conn.execute("VACUUM INTO ?1", [target])
        .map_err(|e| sqlite_message(&e, None))?;
    set_private(to).map_err(|e| e.to_string())?;
    sync_file(to).map_err(|e| e.to_string())
}

fn set_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

fn sqlite_restore(db: &Path, backup: &Path) -> std::result::Result<(), String> {
    // Refuse a file that is not a healthy SQLite database before touching the live one.
    let check =
        rusqlite::Connection::open_with_flags(backup, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|c| c.query_row("PRAGMA quick_check", [], |r| r.get::<_, String>(0)))
            .map_err(|e| format!("the backup is not a readable SQLite database: {e}"))?;
    if check != "ok" {
        return Err(format!("the backup fails its integrity check: {check}"));
    }
    let dir = db.parent().ok_or("the database path has no directory")?;
    let file = db.file_name().ok_or("the database path has no file name")?;
    let tmp = dir.join(format!(".{}.clarity-restore", file.to_string_lossy()));
    std::fs::copy(backup, &tmp).map_err(|e| format!("copying to {}: {e}", tmp.display()))?;
    sync_file(&tmp).map_err(|e| e.to_string())?;
    // A write-ahead log or journal left by the replaced file would be replayed into the
    // restored one and corrupt it.
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut side = db.as_os_str().to_owned();
        side.push(suffix);
        match std::fs::remove_file(PathBuf::from(side)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    std::fs::rename(&tmp, db).map_err(|e| format!("replacing {}: {e}", db.display()))?;
    crate::atomic_file::sync_dir(dir);
    Ok(())
}

/// How `pg_dump` and `psql` reach the database: connection parts as arguments, the password
/// only in the child's environment.
fn pg_command(tool: &str, conn: &SecretString) -> std::result::Result<Command, String> {
    let config = postgres::Config::from_str(conn.expose())
        .map_err(|_| "the connection string does not parse".to_string())?;
    let mut cmd = Command::new(pg_tool(tool));
    cmd.arg("--no-password");
    match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => {
            cmd.arg(format!("--host={h}"));
        }
        Some(postgres::config::Host::Unix(p)) => {
            cmd.arg(format!("--host={}", p.display()));
        }
        None => {}
    }
    if let Some(addr) = config.get_hostaddrs().first() {
        cmd.env("PGHOSTADDR", addr.to_string());
    }
    if let Some(port) = config.get_ports().first() {
        cmd.arg(format!("--port={port}"));
    }
    if let Some(user) = config.get_user() {
        cmd.arg(format!("--username={user}"));
    }
    if let Some(db) = config.get_dbname() {
        cmd.arg(format!("--dbname={db}"));
    }
    match config.get_password() {
        Some(pw) => cmd.env("PGPASSWORD", String::from_utf8_lossy(pw).as_ref()),
        None => cmd.env_remove("PGPASSWORD"),
    };
    let timeout = config
        .get_connect_timeout()
        .copied()
        .unwrap_or(PG_CONNECT_TIMEOUT);
    cmd.env("PGCONNECT_TIMEOUT", timeout.as_secs().max(1).to_string());
    Ok(cmd)
}

/// The tool on PATH, else from the newest `/usr/lib/postgresql/<version>/bin` (Debian keeps
/// server-side tools there), else the bare name so the error says what was missing.
fn pg_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(found) = std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
    {
        return found;
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            Some((v, e.path().join("bin").join(name)))
        })
        .filter(|(_, p)| p.is_file())
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, p)| p)
        .unwrap_or_else(|| PathBuf::from(name))
}

fn run_pg_tool(mut cmd: Command, conn: &SecretString) -> std::result::Result<(), String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let captured = run_captured(&mut cmd, None)
        .map_err(|e| format!("cannot run {program}: {e} (install the PostgreSQL client tools)"))?;
    if captured.status.is_some_and(|s| s.success()) {
        return Ok(());
    }
    let tail = tail_lines(&captured.stderr_or_stdout(), STDERR_TAIL_LINES);
    Err(Redactor::new(conn).clean(&format!(
        "{program} {}: {}",
        describe_status(captured.status),
        tail.trim()
    )))
}

fn pg_dump(conn: &SecretString, to: &Path) -> std::result::Result<(), String> {
    let mut cmd = pg_command("pg_dump", conn)?;
    // Plain SQL so that `restore` can replay it inside psql's single transaction, after
    // dropping what the migrations created.
    cmd.arg("--format=plain")
        .arg(format!("--file={}", to.display()));
    run_pg_tool(cmd, conn)?;
    set_private(to).map_err(|e| e.to_string())?;
    sync_file(to).map_err(|e| e.to_string())
}

/// Drops the user objects of the database so that a replayed dump reproduces it exactly,
/// objects created after the dump included. Extension members are left to their extension.
const PG_CLEAN: &str = r#"
DO $clarity$
DECLARE r record;
BEGIN
  FOR r IN SELECT n.nspname FROM pg_namespace n
    WHERE n.nspname NOT IN ('public', 'information_schema') AND n.nspname NOT LIKE 'pg\_%'
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_namespace'::regclass
                      AND d.objid = n.oid AND d.deptype = 'e')
  LOOP
    EXECUTE format('DROP SCHEMA IF EXISTS %I CASCADE', r.nspname);
  END LOOP;
  FOR r IN SELECT e.extname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
    WHERE n.nspname = 'public'
  LOOP
    EXECUTE format('DROP EXTENSION IF EXISTS %I CASCADE', r.extname);
  END LOOP;
  FOR r IN SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                      AND d.objid = c.oid AND d.deptype IN ('e', 'a', 'i'))
  LOOP
    EXECUTE format('DROP %s IF EXISTS public.%I CASCADE',
      CASE r.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
        WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
      r.relname);
  END LOOP;
  FOR r IN SELECT p.oid::regprocedure::text AS sig, p.prokind FROM pg_proc p
    JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = 'public'
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                      AND d.objid = p.oid AND d.deptype = 'e')
  LOOP
    EXECUTE format('DROP %s IF EXISTS %s CASCADE',
      CASE r.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE' ELSE 'FUNCTION' END,
      r.sig);
  END LOOP;
  FOR r IN SELECT t.oid::regtype::text AS name, t.typtype FROM pg_type t
    JOIN pg_namespace n ON n.oid = t.typnamespace
    WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd', 'r', 'c')
      AND (t.typtype <> 'c' OR (SELECT c.relkind FROM pg_class c WHERE c.oid = t.typrelid) = 'c')
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass
                      AND d.objid = t.oid AND d.deptype = 'e')
  LOOP
    EXECUTE format('DROP %s IF EXISTS %s CASCADE',
      CASE r.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, r.name);
  END LOOP;
END
$clarity$;
"#;

fn pg_restore(conn: &SecretString, backup: &Path) -> std::result::Result<(), String> {
    let mut cmd = pg_command("psql", conn)?;
    cmd.args([
        "--no-psqlrc",
        "--quiet",
        "--set=ON_ERROR_STOP=1",
        "--single-transaction",
    ])
    .arg(format!("--command={PG_CLEAN}"))
    .arg(format!("--file={}", backup.display()));
    run_pg_tool(cmd, conn)
}

// ---------------------------------------------------------------------------------------------
// The command engine

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_names_sort_by_time_and_are_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let a = unique_backup_name(dir.path(), "sqlite");
        assert!(is_backup_name(&a), "{a}");
        std::fs::write(dir.path().join(&a), "").unwrap();
        let b = unique_backup_name(dir.path(), "sqlite");
        assert!(a < b, "{a} {b}");
        assert!(!is_backup_name("notes.sqlite"));
        assert!(!is_backup_name(&format!(".{a}.partial")));
    }
}
