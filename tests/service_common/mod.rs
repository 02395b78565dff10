//! Pieces shared by the service backend tests: a stdlib Python HTTP server that reports how it
//! was started, a client for it, and arguments that exercise every quoting rule of every
//! manager. Each `tests/service_*.rs` says `mod service_common;`.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// Serves `GET /` on 127.0.0.1:`argv[1]` with JSON: its argv, the `APP_*` environment, its
/// working directory, user and PID. Prints one line when it listens.
pub const SERVE_PY: &str = r#"import http.server, json, os, pwd, sys
port = int(sys.argv[1])
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({
            "argv": sys.argv[1:],
            "env": {k: v for k, v in os.environ.items() if k.startswith("APP_")},
            "cwd": os.getcwd(),
            "user": pwd.getpwuid(os.getuid()).pw_name,
            "pid": os.getpid(),
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
print("listening on", port, flush=True)
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"#;

/// Arguments that exercise every escaping rule: blanks, specifiers and `%` expansion, `$`
/// expansion, a lone semicolon, comment characters after a blank, the empty word, quotes,
/// backslashes, a tab, non-ASCII.
pub fn tricky_args() -> Vec<String> {
    [
        "a b",
        "100%",
        "%(ENV_HOME)s",
        "$HOME",
        "${X}",
        ";",
        "x ;y",
        "#tag",
        "x #y",
        "",
        "q\"uote",
        "it's",
        "back\\slash",
        "tab\there",
        "größe",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Release directories `r1`, `r2` with the server, and `current` pointing at `r1`.
pub fn make_releases(base: &Path) {
    for release in ["r1", "r2"] {
        let dir = base.join("releases").join(release);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("serve.py"), SERVE_PY).unwrap();
    }
    switch_current(base, "r1");
}

/// Points `current` at a release atomically, as the agent does.
pub fn switch_current(base: &Path, release: &str) {
    let tmp = base.join("current.tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(base.join("releases").join(release), &tmp).unwrap();
    std::fs::rename(&tmp, base.join("current")).unwrap();
}

/// Writes an env file the way the agent does: `KEY="VALUE"`, `\` and `"` escaped, mode 0600.
pub fn write_env(path: &Path, vars: &[(&str, &str)]) {
    use std::os::unix::fs::PermissionsExt;
    let text: String = vars
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"\n", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// GETs `/` until the server answers, from a process other than `not_pid` when given.
pub fn wait_for_server(port: u16, not_pid: Option<u64>) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(body) = get(port)
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&body)
            && not_pid.is_none_or(|p| v["pid"] != p)
        {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "nothing (new) answered on port {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn get(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

/// Waits until `check` holds, or panics with `what`.
pub fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The state letter of a process in /proc (`Z` for a zombie), `None` when it is gone.
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .next()?
        .chars()
        .next()
}
