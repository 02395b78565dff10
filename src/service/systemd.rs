//! The systemd backend (production): a unit file at `<root>/etc/systemd/system/<name>.service`,
//! loaded with `systemctl daemon-reload` and enabled or disabled per `autostart`. Rendering
//! follows systemd's own parsing rules so that an argument, a path or a user name reaches the
//! service exactly as written: `%` specifiers and `$` expansion are escaped, arguments that
//! need it are quoted with C-style escapes, and a lone `;` (a command separator) is escaped.
//! Every unit this module renders passes `systemd-analyze verify` without a warning (tests
//! check it on the host and inside a container running real systemd).
//!
//! `systemctl` always talks to the running system manager; the root only decides where the
//! unit file goes, so anything but `/` is for tests that look at the written file.

use super::{
    ServiceBackend, ServiceDefinition, ServiceError, invalid, remove_file, resolve_program, run,
    run_ok, under_root, write_if_changed,
};
use crate::model::host::ServiceState;
use crate::model::{RestartPolicy, ServiceManager};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Where units live below the root.
pub const UNIT_DIR: &str = "/etc/systemd/system";

pub struct SystemdBackend {
    root: PathBuf,
    systemctl: String,
}

impl SystemdBackend {
    /// Units below `root` (`/` in production), driven by `systemctl` from `PATH`.
    pub fn new(root: impl Into<PathBuf>) -> SystemdBackend {
        SystemdBackend {
            root: root.into(),
            systemctl: "systemctl".to_string(),
        }
    }

    /// The production backend: `/etc/systemd/system` and the system manager.
    pub fn system() -> SystemdBackend {
        SystemdBackend::new("/")
    }

    pub fn unit_path(&self, name: &str) -> PathBuf {
        under_root(&self.root, Path::new(UNIT_DIR)).join(unit(name))
    }

    fn systemctl(&self, name: &str, args: &[&str]) -> Vec<String> {
        // --no-ask-password: the agent is never interactive; a polkit prompt would hang it.
        let mut argv = vec![self.systemctl.clone(), "--no-ask-password".to_string()];
        argv.extend(args.iter().map(|a| a.to_string()));
        if !name.is_empty() {
            argv.push(unit(name));
        }
        argv
    }

    /// A release that crash-looped under `Restart=` exhausts the unit's start limit, and
    /// systemd then refuses every start "attempted too often" — including the one that puts
    /// the previous release back. A start the agent asks for is deliberate: clear the failed
    /// state first. (A unit that was never loaded has nothing to reset; that is not an error.)
    fn clear_start_limit(&self, name: &str) {
        let _ = run(name, &self.systemctl(name, &["reset-failed"]));
    }

    fn ctl(&self, name: &str, args: &[&str]) -> Result<(), ServiceError> {
        run_ok(name, &self.systemctl(name, args)).map(|_| ())
    }

    /// `systemctl show` properties of the unit; `None` when systemctl could not answer.
    fn show(&self, name: &str, props: &str) -> Option<Vec<(String, String)>> {
        let out = run(name, &self.systemctl(name, &["show", "--property", props])).ok()?;
        if !out.status.success() {
            return None;
        }
        Some(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }
}

fn unit(name: &str) -> String {
    format!("{name}.service")
}

impl ServiceBackend for SystemdBackend {
    fn kind(&self) -> ServiceManager {
        ServiceManager::Systemd
    }

    fn render(&self, def: &ServiceDefinition) -> Result<String, ServiceError> {
        let search: Vec<PathBuf> = super::SYSTEM_BIN_DIRS.iter().map(PathBuf::from).collect();
        let program = resolve_program(def, &search, &self.root)?;
        let name = def.name.as_str();
        let mut exec = exec_word(name, &path_text(name, &program)?)?;
        for arg in &def.command[1..] {
            exec.push(' ');
            exec.push_str(&exec_word(name, arg)?);
        }
        let mut u = String::new();
        u.push_str("# Written by clarity-reconcile; edits are overwritten on the next apply.\n");
        u.push_str("[Unit]\n");
        let _ = writeln!(u, "Description=Clarity service {name}");
        u.push_str("After=network.target\n\n[Service]\n");
        // exec, not simple: `systemctl start` then fails when the program cannot be executed,
        // instead of reporting success for a service that never ran.
        u.push_str("Type=exec\n");
        let _ = writeln!(u, "ExecStart={exec}");
        let _ = writeln!(
            u,
            "WorkingDirectory={}",
            setting(
                name,
                "WorkingDirectory",
                &path_text(name, &def.working_dir)?
            )?
        );
        if let Some(env) = &def.env_file {
            let _ = writeln!(
                u,
                "EnvironmentFile={}",
                setting(name, "EnvironmentFile", &path_text(name, env)?)?
            );
        }
        if let Some(user) = &def.user {
            if user.is_empty() || user.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(invalid(
                    name,
                    format!("user `{user}` is not a valid user name"),
                ));
            }
            let _ = writeln!(u, "User={}", setting(name, "User", user)?);
        }
        let restart = match def.restart {
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Never => "no",
        };
        let _ = writeln!(u, "Restart={restart}");
        if def.restart != RestartPolicy::Never {
            // A second between attempts instead of systemd's 100 ms: a crashing service does
            // not hit the start limit before anyone can look at it.
            u.push_str("RestartSec=1\n");
        }
        if let Some(limits) = &def.limits {
            if let Some(mb) = limits.memory_mb {
                positive(name, "memory_mb", mb)?;
                let _ = writeln!(u, "MemoryMax={mb}M");
            }
            if let Some(n) = limits.nofile {
                positive(name, "nofile", n)?;
                let _ = writeln!(u, "LimitNOFILE={n}");
            }
            if let Some(p) = limits.cpu_percent {
                positive(name, "cpu_percent", u64::from(p))?;
                let _ = writeln!(u, "CPUQuota={p}%");
            }
        }
        u.push_str("\n[Install]\nWantedBy=multi-user.target\n");
        Ok(u)
    }

    fn install(&self, def: &ServiceDefinition) -> Result<bool, ServiceError> {
        let text = self.render(def)?;
        let name = def.name.as_str();
        let written = write_if_changed(name, &self.unit_path(name), &text, 0o644)?;
        // An unchanged file may still be unloaded, when an earlier daemon-reload failed.
        let needs_reload = written
            || self
                .show(name, "NeedDaemonReload")
                .is_some_and(|p| p.iter().any(|(k, v)| k == "NeedDaemonReload" && v == "yes"));
        if needs_reload {
            self.ctl("", &["daemon-reload"])
                .map_err(|e| rename_service(e, name))?;
        }
        let toggled = if self.enabled(name) == Some(def.autostart) {
            false
        } else {
            self.ctl(name, &[if def.autostart { "enable" } else { "disable" }])?;
            true
        };
        Ok(written || toggled)
    }

    fn start(&self, name: &str) -> Result<(), ServiceError> {
        super::check_name(name)?;
        self.clear_start_limit(name);
        self.ctl(name, &["start"])
    }

    fn stop(&self, name: &str) -> Result<(), ServiceError> {
        super::check_name(name)?;
        self.ctl(name, &["stop"])
    }

    fn restart(&self, name: &str) -> Result<(), ServiceError> {
        super::check_name(name)?;
        self.clear_start_limit(name);
        self.ctl(name, &["restart"])
    }

    fn state(&self, name: &str) -> ServiceState {
        if super::check_name(name).is_err() {
            return ServiceState::Unknown;
        }
        let Some(props) = self.show(name, "LoadState,ActiveState,SubState") else {
            return ServiceState::Unknown;
        };
        let get = |key: &str| {
            props
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
                .unwrap_or("")
        };
        unit_state(get("LoadState"), get("ActiveState"), get("SubState"))
    }

    fn enabled(&self, name: &str) -> Option<bool> {
        super::check_name(name).ok()?;
        // is-enabled exits 1 for "disabled"; the answer is on stdout either way.
        let out = run(name, &self.systemctl(name, &["is-enabled"])).ok()?;
        match String::from_utf8_lossy(&out.stdout).trim() {
            "enabled" | "enabled-runtime" => Some(true),
            "disabled" | "static" | "indirect" | "masked" | "masked-runtime" | "linked"
            | "linked-runtime" | "generated" | "transient" | "alias" => Some(false),
            _ => None,
        }
    }

    fn remove(&self, name: &str) -> Result<(), ServiceError> {
        super::check_name(name)?;
        let path = self.unit_path(name);
        let state = self.state(name);
        if !path.exists() && state == ServiceState::Missing {
            return Ok(());
        }
        if !matches!(state, ServiceState::Missing | ServiceState::Stopped) {
            self.ctl(name, &["stop"])?;
        }
        if path.exists() {
            // Disable while the file is still there: systemctl reads [Install] to know which
            // links to remove.
            self.ctl(name, &["disable"])?;
            remove_file(name, &path)?;
        }
        self.ctl("", &["daemon-reload"])
            .map_err(|e| rename_service(e, name))?;
        // Forget a failed state, or the unit lingers in `systemctl --failed`.
        let _ = run(name, &self.systemctl(name, &["reset-failed"]));
        Ok(())
    }
}

/// Errors from commands run without a unit name still belong to the service.
fn rename_service(e: ServiceError, name: &str) -> ServiceError {
    match e {
        ServiceError::Command {
            command,
            status,
            stderr,
            ..
        } => ServiceError::Command {
            service: name.to_string(),
            command,
            status,
            stderr,
        },
        ServiceError::Spawn {
            command, source, ..
        } => ServiceError::Spawn {
            service: name.to_string(),
            command,
            source,
        },
        other => other,
    }
}

/// systemd's view of a unit, as a [`ServiceState`]. A unit waiting to be restarted after a
/// crash (`auto-restart`) is not running: it counts as failed until it runs again.
pub fn unit_state(load: &str, active: &str, sub: &str) -> ServiceState {
    if load == "not-found" && matches!(active, "inactive" | "") {
        return ServiceState::Missing;
    }
    match active {
        "activating" if sub == "auto-restart" => ServiceState::Failed,
        "active" | "reloading" | "activating" | "refreshing" => ServiceState::Running,
        "failed" => ServiceState::Failed,
        "inactive" | "deactivating" | "maintenance" => ServiceState::Stopped,
        _ => ServiceState::Unknown,
    }
}

fn positive(name: &str, what: &str, value: u64) -> Result<(), ServiceError> {
    if value == 0 {
        Err(invalid(
            name,
            format!("limit {what} must be greater than 0"),
        ))
    } else {
        Ok(())
    }
}

fn path_text(name: &str, path: &Path) -> Result<String, ServiceError> {
    path.to_str()
        .map(str::to_string)
        .ok_or_else(|| invalid(name, format!("path {} is not UTF-8", path.display())))
}

/// A single-valued setting (a path, a user): specifiers escaped. systemd takes the rest of
/// the line verbatim, so only what it would reinterpret is refused: control characters, a
/// trailing backslash (a line continuation) and surrounding blanks (trimmed away).
fn setting(name: &str, key: &str, value: &str) -> Result<String, ServiceError> {
    if value.chars().any(char::is_control) || value.ends_with('\\') || value.trim() != value {
        return Err(invalid(
            name,
            format!("{key} value {value:?} cannot be written to a unit file"),
        ));
    }
    Ok(value.replace('%', "%%"))
}

/// One word of `ExecStart=`: `%` → `%%` (specifiers), `$` → `$$` (environment expansion), then
/// quoted with C escapes when it holds blanks, quotes, backslashes or control characters or is
/// empty; a lone `;` would separate commands and is written `\;`.
pub fn exec_word(name: &str, arg: &str) -> Result<String, ServiceError> {
    if arg.contains('\0') {
        return Err(invalid(name, "a command argument contains a NUL byte"));
    }
    let word = arg.replace('%', "%%").replace('$', "$$");
    if word == ";" {
        return Ok("\\;".to_string());
    }
    let needs_quotes = word.is_empty()
        || word
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '\\'));
    if !needs_quotes {
        return Ok(word);
    }
    let mut out = String::with_capacity(word.len() + 2);
    out.push('"');
    for c in word.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() && (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Limits;
    use crate::service::tests::definition;

    fn word(arg: &str) -> String {
        exec_word("t", arg).unwrap()
    }

    #[test]
    fn exec_words_follow_systemd_quoting() {
        assert_eq!(word("-jar"), "-jar");
        assert_eq!(word("app.jar"), "app.jar");
        assert_eq!(word("100%"), "100%%");
        assert_eq!(word("$HOME"), "$$HOME");
        assert_eq!(word("${HOME}"), "$${HOME}");
        assert_eq!(word("a b"), "\"a b\"");
        assert_eq!(word(""), "\"\"");
        assert_eq!(word(";"), "\\;");
        assert_eq!(word(";x"), ";x");
        assert_eq!(word("say \"hi\""), "\"say \\\"hi\\\"\"");
        assert_eq!(word("it's"), "\"it's\"");
        assert_eq!(word("C:\\dir\\"), "\"C:\\\\dir\\\\\"");
        assert_eq!(word("two\nlines\t!"), "\"two\\nlines\\t!\"");
        assert_eq!(word("bell\u{7}"), "\"bell\\x07\"");
        assert_eq!(word("50% of $X"), "\"50%% of $$X\"");
        assert_eq!(word("größe"), "größe");
        assert!(exec_word("t", "nul\0").is_err());
    }

    #[test]
    fn renders_a_complete_unit() {
        let mut def = definition(
            "clarity-smsgateway",
            &[
                "/usr/bin/java",
                "-Xmx1g",
                "-jar",
                "smsgateway.jar",
                "--greeting",
                "hello world",
            ],
        );
        def.working_dir = PathBuf::from("/opt/clarity/smsgateway/current");
        def.env_file = Some(PathBuf::from("/opt/clarity/smsgateway/env"));
        def.user = Some("smsgw".into());
        def.limits = Some(Limits {
            memory_mb: Some(1536),
            nofile: Some(65536),
            cpu_percent: Some(150),
        });
        let text = SystemdBackend::new("/nonexistent-root")
            .render(&def)
            .unwrap();
        assert_eq!(
            text,
            "# Written by clarity-reconcile; edits are overwritten on the next apply.\n\
             [Unit]\n\
             Description=Clarity service clarity-smsgateway\n\
             After=network.target\n\
             \n\
             [Service]\n\
             Type=exec\n\
             ExecStart=/usr/bin/java -Xmx1g -jar smsgateway.jar --greeting \"hello world\"\n\
             WorkingDirectory=/opt/clarity/smsgateway/current\n\
             EnvironmentFile=/opt/clarity/smsgateway/env\n\
             User=smsgw\n\
             Restart=always\n\
             RestartSec=1\n\
             MemoryMax=1536M\n\
             LimitNOFILE=65536\n\
             CPUQuota=150%\n\
             \n\
             [Install]\n\
             WantedBy=multi-user.target\n"
        );
    }

    #[test]
    fn restart_policies_and_optional_settings() {
        let backend = SystemdBackend::new("/nonexistent-root");
        let mut def = definition("clarity-a", &["bin/run"]);
        def.restart = RestartPolicy::OnFailure;
        let text = backend.render(&def).unwrap();
        assert!(text.contains("ExecStart=/opt/clarity/app/current/bin/run\n"));
        assert!(text.contains("Restart=on-failure\nRestartSec=1\n"));
        assert!(!text.contains("User="));
        assert!(!text.contains("EnvironmentFile="));
        assert!(!text.contains("MemoryMax"));
        def.restart = RestartPolicy::Never;
        let text = backend.render(&def).unwrap();
        assert!(text.contains("Restart=no\n"));
        assert!(!text.contains("RestartSec"));
    }

    #[test]
    fn specifiers_in_paths_are_escaped_and_bad_values_refused() {
        let backend = SystemdBackend::new("/nonexistent-root");
        let mut def = definition("clarity-a", &["bin/run"]);
        def.working_dir = PathBuf::from("/opt/100%/current");
        let text = backend.render(&def).unwrap();
        assert!(text.contains("WorkingDirectory=/opt/100%%/current\n"));
        assert!(text.contains("ExecStart=/opt/100%%/current/bin/run\n"));
        def.working_dir = PathBuf::from("/opt/a\nb");
        assert!(backend.render(&def).is_err());
        let mut def = definition("clarity-a", &["bin/run"]);
        def.user = Some("a b".into());
        assert!(backend.render(&def).is_err());
        let mut def = definition("clarity-a", &["bin/run"]);
        def.limits = Some(Limits {
            memory_mb: Some(0),
            nofile: None,
            cpu_percent: None,
        });
        assert!(backend.render(&def).is_err());
        assert!(backend.render(&definition("bad/name", &["x"])).is_err());
    }

    #[test]
    fn unit_states() {
        assert_eq!(
            unit_state("loaded", "active", "running"),
            ServiceState::Running
        );
        assert_eq!(
            unit_state("loaded", "activating", "start"),
            ServiceState::Running
        );
        assert_eq!(
            unit_state("loaded", "activating", "auto-restart"),
            ServiceState::Failed
        );
        assert_eq!(
            unit_state("loaded", "failed", "failed"),
            ServiceState::Failed
        );
        assert_eq!(
            unit_state("loaded", "inactive", "dead"),
            ServiceState::Stopped
        );
        assert_eq!(
            unit_state("not-found", "inactive", "dead"),
            ServiceState::Missing
        );
        // A unit file deleted under a running service: still running.
        assert_eq!(
            unit_state("not-found", "active", "running"),
            ServiceState::Running
        );
        assert_eq!(unit_state("", "", ""), ServiceState::Unknown);
    }

    #[test]
    fn unit_path_is_below_the_root() {
        assert_eq!(
            SystemdBackend::new("/sandbox").unit_path("clarity-a"),
            Path::new("/sandbox/etc/systemd/system/clarity-a.service")
        );
        assert_eq!(
            SystemdBackend::system().unit_path("clarity-a"),
            Path::new("/etc/systemd/system/clarity-a.service")
        );
    }
}
