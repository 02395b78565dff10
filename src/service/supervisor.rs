//! The supervisord backend, for hosts where systemd is not PID 1: a `[program:<name>]`
//! section in `<include dir>/<name>.conf`, loaded with `supervisorctl reread` and
//! `supervisorctl update <name>`.
//!
//! supervisord has no env-file option, so the section carries the environment itself
//! (`environment=KEY="value",...`) and the file is written mode 0600: the values, secrets
//! included, sit in a file only root can read. Rendering follows supervisord 4's parsing: every
//! value goes through Python `%` expansion (`%` is doubled), Python's config parser cuts a
//! value at a `;` or `#` that follows a blank (so the command escapes them), `command` is split
//! with POSIX `shlex` (so each argument is backslash-escaped where needed) and `environment` is
//! split with non-POSIX `shlex`, which knows no escapes at all: a value that cannot be written
//! there (a line break, both kinds of quote, a quote at either end) is refused with an error
//! naming the variable, never its value.
//!
//! Unlike systemd, supervisord applies a changed definition by restarting the program, and
//! starts a new program with `autostart=true` as soon as it is loaded. Resource limits are not
//! enforced by supervisord; the section says so in a comment.

use super::{
    ServiceBackend, ServiceDefinition, ServiceError, env_file, invalid, remove_file,
    resolve_program, run, write_if_changed,
};
use crate::model::host::ServiceState;
use crate::model::{RestartPolicy, ServiceManager};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Debian's supervisord includes `/etc/supervisor/conf.d/*.conf`.
pub const DEFAULT_INCLUDE_DIR: &str = "/etc/supervisor/conf.d";

pub struct SupervisorBackend {
    include_dir: PathBuf,
    ctl: Vec<String>,
}

impl SupervisorBackend {
    /// Programs in `include_dir`, driven by `supervisorctl` with `ctl_args` before each command
    /// (e.g. `["-c", "/path/supervisord.conf"]`; empty for the system configuration).
    pub fn new(include_dir: impl Into<PathBuf>, ctl_args: Vec<String>) -> SupervisorBackend {
        let mut ctl = vec!["supervisorctl".to_string()];
        ctl.extend(ctl_args);
        SupervisorBackend {
            include_dir: include_dir.into(),
            ctl,
        }
    }

    /// The production backend: `/etc/supervisor/conf.d` and supervisorctl with the system
    /// configuration (`/etc/supervisor/supervisord.conf`).
    pub fn system() -> SupervisorBackend {
        SupervisorBackend::new(DEFAULT_INCLUDE_DIR, Vec::new())
    }

    pub fn config_path(&self, name: &str) -> PathBuf {
        self.include_dir.join(format!("{name}.conf"))
    }

    fn argv(&self, args: &[&str]) -> Vec<String> {
        let mut argv = self.ctl.clone();
        argv.extend(args.iter().map(|a| a.to_string()));
        argv
    }

    /// Runs a supervisorctl action and judges it by its report lines as well as its exit
    /// status: supervisorctl prints `ERROR (...)` for some failures and exits 0, and reports
    /// benign outcomes (`already started`, `not running`) as errors.
    fn action(&self, name: &str, args: &[&str]) -> Result<(), ServiceError> {
        let argv = self.argv(args);
        let out = run(name, &argv)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let failed_line = stdout.lines().any(|l| {
            (l.contains("ERROR") || l.contains("has problems"))
                && !l.contains("(already started)")
                && !l.contains("(not running)")
        });
        let benign_only = !failed_line
            && stdout
                .lines()
                .any(|l| l.contains("(already started)") || l.contains("(not running)"));
        if failed_line || (!out.status.success() && !benign_only) {
            return Err(super::command_failed(name, &argv, &out));
        }
        Ok(())
    }

    fn load(&self, name: &str) -> Result<(), ServiceError> {
        self.action(name, &["reread"])?;
        self.action(name, &["update", name])
    }

    /// The program's line of `supervisorctl status`: exit 0 running, 3 not running, 4 no such
    /// process or supervisord unreachable.
    fn status_word(&self, name: &str) -> Result<String, ()> {
        let out = run(name, &self.argv(&["status", name])).map_err(|_| ())?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if stdout.contains("no such process") || stdout.contains("no such group") {
            return Ok("MISSING".to_string());
        }
        stdout
            .lines()
            .find_map(|l| {
                let mut words = l.split_whitespace();
                (words.next() == Some(name)).then(|| words.next().map(str::to_string))?
            })
            .ok_or(())
    }
}

impl ServiceBackend for SupervisorBackend {
    fn kind(&self) -> ServiceManager {
        ServiceManager::Supervisor
    }

    fn render(&self, def: &ServiceDefinition) -> Result<String, ServiceError> {
        let search: Vec<PathBuf> = super::SYSTEM_BIN_DIRS.iter().map(PathBuf::from).collect();
        let program = resolve_program(def, &search, Path::new("/"))?;
        let name = def.name.as_str();
        let mut command = command_word(name, &path_text(name, &program)?)?;
        for arg in &def.command[1..] {
            command.push(' ');
            command.push_str(&command_word(name, arg)?);
        }
        let mut s = String::new();
        s.push_str("; Written by clarity-reconcile; edits are overwritten on the next apply.\n");
        if def.env_file.is_some() {
            s.push_str("; Holds the service's environment, secrets included: keep it mode 0600.\n");
        }
        let _ = writeln!(s, "[program:{name}]");
        let _ = writeln!(s, "command={command}");
        let _ = writeln!(
            s,
            "directory={}",
            value(name, "directory", &path_text(name, &def.working_dir)?)?
        );
        if let Some(path) = &def.env_file {
            let vars = env_file::read(name, path)?;
            if !vars.is_empty() {
                let pairs = vars
                    .iter()
                    .map(|(k, v)| Ok(format!("{k}={}", env_value(name, k, v)?)))
                    .collect::<Result<Vec<_>, ServiceError>>()?;
                let _ = writeln!(s, "environment={}", pairs.join(","));
            }
        }
        if let Some(user) = &def.user {
            if user.is_empty() || user.chars().any(char::is_whitespace) {
                return Err(invalid(
                    name,
                    format!("user `{user}` is not a valid user name"),
                ));
            }
            let _ = writeln!(s, "user={}", value(name, "user", user)?);
        }
        let _ = writeln!(s, "autostart={}", def.autostart);
        let autorestart = match def.restart {
            RestartPolicy::Always => "true",
            RestartPolicy::OnFailure => "unexpected",
            RestartPolicy::Never => "false",
        };
        let _ = writeln!(s, "autorestart={autorestart}");
        s.push_str("startsecs=1\nstartretries=3\n");
        // Stop and kill the whole process group: a wrapper script's children go too.
        s.push_str("stopasgroup=true\nkillasgroup=true\n");
        s.push_str("redirect_stderr=true\n");
        let _ = writeln!(
            s,
            "stdout_logfile={}",
            value(name, "stdout_logfile", &path_text(name, &def.log_file)?)?
        );
        if def
            .limits
            .as_ref()
            .is_some_and(|l| l.memory_mb.is_some() || l.nofile.is_some() || l.cpu_percent.is_some())
        {
            s.push_str(
                "; limits (memory_mb, nofile, cpu_percent) are not enforced by supervisord\n",
            );
        }
        Ok(s)
    }

    fn install(&self, def: &ServiceDefinition) -> Result<bool, ServiceError> {
        let text = self.render(def)?;
        let name = def.name.as_str();
        // supervisord will not start a program whose log directory is missing.
        if let Some(dir) = def.log_file.parent() {
            std::fs::create_dir_all(dir).map_err(super::io_error(name, "create directory", dir))?;
        }
        let written = write_if_changed(name, &self.config_path(name), &text, 0o600)?;
        // An unchanged file may still be unloaded, when an earlier update failed.
        if written || self.state(name) == ServiceState::Missing {
            self.load(name)?;
        }
        Ok(written)
    }

    fn start(&self, name: &str) -> Result<(), ServiceError> {
        super::check_name(name)?;
        self.action(name, &["start", name])
    }

    fn stop(&self, name: &str) -> Result<(), ServiceError> {
        super::check_name(name)?;
        self.action(name, &["stop", name])
    }

    fn restart(&self, name: &str) -> Result<(), ServiceError> {
        super::check_name(name)?;
        self.action(name, &["restart", name])
    }

    fn state(&self, name: &str) -> ServiceState {
        if super::check_name(name).is_err() {
            return ServiceState::Unknown;
        }
        match self.status_word(name) {
            Ok(word) => program_state(&word),
            Err(()) => ServiceState::Unknown,
        }
    }

    fn enabled(&self, name: &str) -> Option<bool> {
        super::check_name(name).ok()?;
        // supervisord has no "enabled": autostart in the section is the whole story.
        let text = std::fs::read_to_string(self.config_path(name)).ok()?;
        text.lines()
            .find_map(|l| l.trim().strip_prefix("autostart="))
            .and_then(|v| match v.trim() {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            })
    }

    fn remove(&self, name: &str) -> Result<(), ServiceError> {
        super::check_name(name)?;
        let path = self.config_path(name);
        let state = self.state(name);
        if !path.exists() && state == ServiceState::Missing {
            return Ok(());
        }
        if !matches!(state, ServiceState::Missing | ServiceState::Stopped) {
            self.action(name, &["stop", name])?;
        }
        remove_file(name, &path)?;
        if state != ServiceState::Missing {
            self.load(name)?;
        }
        Ok(())
    }
}

/// A `supervisorctl status` state word as a [`ServiceState`]. `BACKOFF` (exited too quickly,
/// about to retry) and `EXITED` (ended on its own) are failures for a service meant to run.
pub fn program_state(word: &str) -> ServiceState {
    match word {
        "RUNNING" | "STARTING" => ServiceState::Running,
        "STOPPED" | "STOPPING" => ServiceState::Stopped,
        "BACKOFF" | "FATAL" | "EXITED" => ServiceState::Failed,
        "MISSING" => ServiceState::Missing,
        _ => ServiceState::Unknown,
    }
}

fn path_text(name: &str, path: &Path) -> Result<String, ServiceError> {
    path.to_str()
        .map(str::to_string)
        .ok_or_else(|| invalid(name, format!("path {} is not UTF-8", path.display())))
}

/// A value fits on one line of the section: no line break or other control character (a tab
/// is fine). And `%(here)s` is substituted by plain text replacement before `%` expansion, so
/// doubling the `%` does not protect it.
fn expansion_safe(s: &str) -> bool {
    !s.contains("%(here)s") && !s.chars().any(|c| c.is_control() && c != '\t')
}

/// A single value (a path, a user). The config parser trims it and cuts it at a `;` or `#`
/// after a blank; values that would be changed that way are refused.
fn value(name: &str, key: &str, v: &str) -> Result<String, ServiceError> {
    if !expansion_safe(v) || v.trim() != v || cuts_at_comment(v) {
        return Err(invalid(
            name,
            format!("{key} value {v:?} cannot be written to a supervisord section"),
        ));
    }
    Ok(v.replace('%', "%%"))
}

fn cuts_at_comment(v: &str) -> bool {
    let chars: Vec<char> = v.chars().collect();
    chars
        .windows(2)
        .any(|w| w[0].is_whitespace() && matches!(w[1], ';' | '#'))
}

/// One argument of `command=`, for POSIX `shlex.split` after `%` expansion: left bare when it
/// holds only characters neither shlex nor the config parser treat specially, otherwise every
/// other ASCII character is backslash-escaped (which also keeps a `;` or `#` from following a
/// blank), and the empty argument is `''`.
pub fn command_word(name: &str, arg: &str) -> Result<String, ServiceError> {
    if !expansion_safe(arg) {
        return Err(invalid(
            name,
            "a command argument holds a line break or control character, which a supervisord section cannot carry",
        ));
    }
    if arg.is_empty() {
        return Ok("''".to_string());
    }
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:@+,%".contains(c) || !c.is_ascii();
    let mut out = String::with_capacity(arg.len());
    for c in arg.chars() {
        if c.is_whitespace() && !c.is_ascii() {
            return Err(invalid(
                name,
                "a command argument holds a non-ASCII blank, which supervisord's parser would trim or cut",
            ));
        }
        if !plain(c) {
            out.push('\\');
        }
        out.push(c);
    }
    Ok(out.replace('%', "%%"))
}

/// One value of `environment=`, for non-POSIX `shlex` (no escapes; the quotes at both ends
/// are stripped): double-quoted, or single-quoted when it holds a double quote.
pub fn env_value(name: &str, key: &str, v: &str) -> Result<String, ServiceError> {
    let refuse = |why: &str| {
        Err(invalid(
            name,
            format!(
                "the value of env var `{key}` {why}, which supervisord's environment= cannot carry; use systemd or change the value"
            ),
        ))
    };
    if !expansion_safe(v) {
        return refuse("holds a line break, a control character or `%(here)s`");
    }
    if v.starts_with(['"', '\'']) || v.ends_with(['"', '\'']) {
        return refuse("starts or ends with a quote");
    }
    if cuts_at_comment(v) {
        return refuse("holds a `;` or `#` after a blank");
    }
    let quote = match (v.contains('"'), v.contains('\'')) {
        (false, _) => '"',
        (true, false) => '\'',
        (true, true) => return refuse("holds both kinds of quote"),
    };
    Ok(format!("{quote}{}{quote}", v.replace('%', "%%")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::tests::definition;

    #[test]
    fn command_words_survive_shlex_and_the_config_parser() {
        let w = |a: &str| command_word("t", a).unwrap();
        assert_eq!(w("-jar"), "-jar");
        assert_eq!(w("a b"), "a\\ b");
        assert_eq!(w("x ;y"), "x\\ \\;y");
        assert_eq!(w("#tag"), "\\#tag");
        assert_eq!(w("100%"), "100%%");
        assert_eq!(w("$HOME"), "\\$HOME");
        assert_eq!(w("it's \"q\""), "it\\'s\\ \\\"q\\\"");
        assert_eq!(w(""), "''");
        assert_eq!(w("größe"), "größe");
        assert_eq!(w("tab\there"), "tab\\\there");
        assert!(command_word("t", "a\nb").is_err());
        assert!(command_word("t", "%(here)s").is_err());
    }

    #[test]
    fn env_values_are_quoted_or_refused_without_showing_them() {
        let v = |s: &str| env_value("t", "K", s);
        assert_eq!(v("plain").unwrap(), "\"plain\"");
        assert_eq!(v("a,b=c d").unwrap(), "\"a,b=c d\"");
        assert_eq!(v("say \"hi\" now").unwrap(), "'say \"hi\" now'");
        assert_eq!(v("it's").unwrap(), "\"it's\"");
        assert_eq!(v("50%").unwrap(), "\"50%%\"");
        assert_eq!(v("back\\slash").unwrap(), "\"back\\slash\"");
        assert_eq!(v("").unwrap(), "\"\"");
        for bad in [
            "s3cret\nx",
            "\"s3cret",
            "s3cret'",
            "s3 \"cr'et",
            "s3cret ;x",
            "a #b",
        ] {
            let err = v(bad).unwrap_err().to_string();
            assert!(err.contains("`K`") && !err.contains("s3cret"), "{err}");
        }
    }

    #[test]
    fn renders_a_program_section() {
        let dir = tempfile::tempdir().unwrap();
        let env = dir.path().join("env");
        std::fs::write(&env, "APP_GREETING=\"hello, world\"\nAPP_RATIO=\"50%\"\n").unwrap();
        let mut def = definition(
            "clarity-web",
            &["/usr/bin/python3", "serve.py", "--label", "a b"],
        );
        def.env_file = Some(env);
        def.user = Some("web".into());
        def.restart = RestartPolicy::OnFailure;
        def.limits = Some(crate::model::Limits {
            memory_mb: Some(64),
            nofile: None,
            cpu_percent: None,
        });
        let text = SupervisorBackend::new(dir.path(), vec![])
            .render(&def)
            .unwrap();
        assert_eq!(
            text,
            "; Written by clarity-reconcile; edits are overwritten on the next apply.\n\
             ; Holds the service's environment, secrets included: keep it mode 0600.\n\
             [program:clarity-web]\n\
             command=/usr/bin/python3 serve.py --label a\\ b\n\
             directory=/opt/clarity/app/current\n\
             environment=APP_GREETING=\"hello, world\",APP_RATIO=\"50%%\"\n\
             user=web\n\
             autostart=true\n\
             autorestart=unexpected\n\
             startsecs=1\n\
             startretries=3\n\
             stopasgroup=true\n\
             killasgroup=true\n\
             redirect_stderr=true\n\
             stdout_logfile=/opt/clarity/app/logs/service.log\n\
             ; limits (memory_mb, nofile, cpu_percent) are not enforced by supervisord\n"
        );
    }

    #[test]
    fn program_states() {
        assert_eq!(program_state("RUNNING"), ServiceState::Running);
        assert_eq!(program_state("STARTING"), ServiceState::Running);
        assert_eq!(program_state("STOPPED"), ServiceState::Stopped);
        assert_eq!(program_state("FATAL"), ServiceState::Failed);
        assert_eq!(program_state("BACKOFF"), ServiceState::Failed);
        assert_eq!(program_state("EXITED"), ServiceState::Failed);
        assert_eq!(program_state("MISSING"), ServiceState::Missing);
        assert_eq!(program_state("UNKNOWN"), ServiceState::Unknown);
    }
}
