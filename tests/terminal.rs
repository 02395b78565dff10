//! What an operator sees on a terminal, with the real binary: colour follows `--color` and
//! `NO_COLOR` (piped output has no escape codes, byte for byte the plain text), the apply shows
//! live per-host progress with bytes and rate on a terminal's stderr (run under a real
//! pseudo-terminal with util-linux `script`) and nothing extra when piped, and a long failure
//! (a stack trace from a service's check, a real HTTP server's HTML 404 page) is one line in
//! the summary with a pointer to `history show RUN`, which keeps the whole text.

mod fetch_servers;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::sandbox::Fixture;

const ESC: &str = "\x1b[";

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("example-config-repo")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn both(o: &Output) -> String {
    format!("{}{}", stdout(o), String::from_utf8_lossy(&o.stderr))
}

/// The binary on the example repository's mock profile with `args`; `NO_COLOR` only when
/// given in `envs` (the test's own environment never leaks in).
fn example_run(work: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(support::clarity_bin());
    cmd.arg("--repo")
        .arg(example())
        .args(["--profile", "mock", "--work-dir"])
        .arg(work)
        .args(args)
        .env_remove("NO_COLOR")
        .env_remove("CLARITY_COLOR")
        .env(
            "CLARITY_AGE_IDENTITY",
            example().join("demo-mock.agekey").to_str().unwrap(),
        );
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn plans_and_drift_reports_colour_only_when_asked_and_never_with_no_color() {
    let work = tempfile::tempdir().unwrap();
    let plan = ["--dry-run", "--assume-empty-hosts"];
    let piped = example_run(work.path(), &plan, &[]);
    assert_eq!(piped.status.code(), Some(2), "{}", both(&piped));
    let piped = stdout(&piped);
    assert!(!piped.contains(ESC), "piped output has escape codes");
    assert!(piped.contains("+ fetch artifact"), "{piped}");

    let forced = stdout(&example_run(
        work.path(),
        &[&plan[..], &["--color", "always"]].concat(),
        &[],
    ));
    // `+` green, `~` yellow, and the plain text underneath unchanged.
    assert!(forced.contains("\x1b[32m+ fetch artifact"), "{forced}");
    assert!(forced.contains("\x1b[33m~ start service"), "{forced}");
    assert_eq!(strip(&forced), piped);

    let no_color = stdout(&example_run(work.path(), &plan, &[("NO_COLOR", "1")]));
    assert_eq!(no_color, piped);
    let never = stdout(&example_run(
        work.path(),
        &[&plan[..], &["--color", "never"]].concat(),
        &[],
    ));
    assert_eq!(never, piped);
    // `always` is the operator's explicit choice: it wins over NO_COLOR (and the env works).
    let env_forced = stdout(&example_run(
        work.path(),
        &plan,
        &[("NO_COLOR", "1"), ("CLARITY_COLOR", "always")],
    ));
    assert!(env_forced.contains(ESC), "{env_forced}");

    // Drift of sandboxes nothing was applied to: every deployment is missing (a finding).
    let drift = example_run(work.path(), &["drift"], &[]);
    assert_eq!(drift.status.code(), Some(2), "{}", both(&drift));
    let drift_plain = stdout(&drift);
    assert!(!drift_plain.contains(ESC), "{drift_plain}");
    assert!(drift_plain.contains("  ! "), "{drift_plain}");
    let drift_colour = stdout(&example_run(
        work.path(),
        &["drift", "--color", "always"],
        &[],
    ));
    assert!(drift_colour.contains("\x1b[33m! "), "{drift_colour}");
    assert_eq!(strip(&drift_colour), drift_plain);
    let drift_no_color = stdout(&example_run(work.path(), &["drift"], &[("NO_COLOR", "1")]));
    assert!(!drift_no_color.contains(ESC), "{drift_no_color}");
}

/// `text` without SGR escape sequences (`ESC [ ... m`).
fn strip(text: &str) -> String {
    let re = regex::Regex::new("\x1b\\[[0-9;]*m").unwrap();
    re.replace_all(text, "").into_owned()
}

/// A sandbox fixture whose `web` artifact comes from a real HTTP server that sends it slowly
/// (64 KiB every 20 ms), so a download takes long enough to show progress.
fn slow_download_fixture(server_root: &Path, url: &str) -> Fixture {
    let f = Fixture::new().unwrap();
    // 2 MiB of comment after the service: a real script, slow to fetch.
    let mut script = support::sandbox::SERVICE.as_bytes().to_vec();
    let padding = format!("# {}\n", "x".repeat(1022));
    for _ in 0..2048 {
        script.extend_from_slice(padding.as_bytes());
    }
    std::fs::write(server_root.join("web-1.0.0.py"), &script).unwrap();
    f.write(
        "repositories/slow.yml",
        &format!("name: slow\ntype: http\nurl: {url}\n"),
    );
    f.write(
        "artifacts/web.yml",
        &format!(
            "id: web\ntype: script\nrepository: slow\nversions:\n  - version: \"1.0.0\"\n    \
             sha256: \"{}\"\n    location: web-1.0.0.py\n    size: {}\n",
            support::sandbox::sha256(&script),
            script.len()
        ),
    );
    f.commit("the artifact comes from a slow http server");
    f
}

fn clarity_args(f: &Fixture) -> Vec<String> {
    [
        "--repo",
        f.repo.to_str().unwrap(),
        "--work-dir",
        f.work.to_str().unwrap(),
        "--profile",
        "mock",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn an_apply_on_a_terminal_shows_each_host_with_download_bytes_and_rate() {
    let Some(script) = support::require_program("script") else {
        return;
    };
    if support::require_program("python3").is_none() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let Some(server) = fetch_servers::Flaky::start(root.path(), fetch_servers::Fault::Slow, 0)
    else {
        return;
    };
    let f = slow_download_fixture(root.path(), &server.url());
    // Under `script` stdin, stdout and stderr are one pseudo-terminal: stderr is a terminal.
    let command = std::iter::once(support::clarity_bin().display().to_string())
        .chain(clarity_args(&f))
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let transcript = root.path().join("transcript");
    let o = Command::new(&script)
        .args(["-qfec", &command])
        .arg(&transcript)
        .env_remove("NO_COLOR")
        .env("TERM", "xterm")
        .env("COLUMNS", "160")
        .output()
        .unwrap();
    let seen = std::fs::read_to_string(&transcript).unwrap_or_default();
    assert!(o.status.success(), "{}\n{seen}", both(&o));
    assert_eq!(
        f.current().as_deref().map(|r| r.starts_with("1.0.0")),
        Some(true)
    );
    // The host's live line while downloading: bytes of the total and a rate.
    let live = regex::Regex::new(
        r"sbx-1: web: downloading \[[=> ]+\] [0-9.]+ [KM]iB/2\.00 MiB \([0-9.]+ [KM]iB/s, ",
    )
    .unwrap();
    assert!(
        live.is_match(&strip(&seen)),
        "no progress line with a rate:\n{seen:?}"
    );
    // The terminal gets colour too: the summary's RESULT in green.
    assert!(seen.contains("\x1b[32mconverged"), "{seen:?}");

    // Piped, the same apply prints its step lines and nothing of the live display.
    std::fs::write(f.repo.join("clients/acme/deployments/web/mock.yml"), {
        let t =
            std::fs::read_to_string(f.repo.join("clients/acme/deployments/web/mock.yml")).unwrap();
        t.replace("content: \"hello\\n\"", "content: \"hi again\\n\"")
    })
    .unwrap();
    f.commit("a new greeting");
    let piped = Command::new(support::clarity_bin())
        .args(clarity_args(&f))
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    assert!(piped.status.success(), "{}", both(&piped));
    assert!(piped.stderr.is_empty(), "{}", both(&piped));
    assert!(!stdout(&piped).contains(ESC), "{}", stdout(&piped));
    assert!(
        stdout(&piped).contains("sbx-1: web: switch release"),
        "{}",
        stdout(&piped)
    );
}

/// The summary row of `host` in an apply's stdout.
fn summary_row<'a>(out: &'a str, host: &str) -> &'a str {
    let table = out
        .split("HOST  ")
        .nth(1)
        .unwrap_or_else(|| panic!("{out}"));
    table
        .lines()
        .find(|l| l.starts_with(host))
        .unwrap_or_else(|| panic!("no row for {host}: {out}"))
}

fn run_id(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("recorded run "))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("{out}"))
        .to_string()
}

fn history_show(f: &Fixture, run: &str) -> String {
    let o = Command::new(support::clarity_bin())
        .args(["history", "show", run, "--ledger"])
        .arg(f.work.join("ledger.sqlite"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", both(&o));
    stdout(&o)
}

#[test]
fn a_long_failure_is_one_summary_line_and_history_keeps_the_whole_text() {
    let Some(f) = Fixture::new() else { return };
    // A check that fails the way a Java service does: a long stack trace on stderr.
    let mut trace = String::from(
        "Exception in thread \"main\" java.lang.IllegalStateException: database pool exhausted\n",
    );
    for i in 0..40 {
        trace.push_str(&format!("\tat com.example.pool.Pool.take(Pool.java:{i})\n"));
    }
    let traces = tempfile::tempdir().unwrap();
    let trace_file = traces.path().join("trace.txt");
    std::fs::write(&trace_file, &trace).unwrap();
    f.set_deployment(
        "1.0.0",
        "hello",
        &format!(
            "  - type: command\n    name: pool\n    command: [\"sh\", \"-c\", \"cat {} >&2; exit 1\"]\n    retries: 1\n",
            trace_file.display()
        ),
    );
    f.commit("a check that fails with a stack trace");
    let o = f.run(&[], &[]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{}", both(&o));
    let run = run_id(&out);
    let row = summary_row(&out, "sbx-1");
    assert!(row.contains("failed"), "{row}");
    assert!(
        row.ends_with(&format!("(full text: history show {run})")),
        "{row}"
    );
    assert!(row.len() < 260, "the row is one short line: {row}");
    assert!(
        !out.contains("Pool.java:1)"),
        "the trace fills stdout:\n{out}"
    );
    // The record keeps the trace (as far as the check kept it) for whoever looks.
    let shown = history_show(&f, &run);
    assert!(shown.contains("database pool exhausted"), "{shown}");
    assert!(shown.contains("Pool.java:1)"), "{shown}");
    // Nothing ran before, so nothing was left running on the host.
    assert_eq!(f.current(), None);
}

#[test]
fn an_html_error_page_is_reduced_to_its_title_once_per_failure() {
    let Some(f) = Fixture::new() else { return };
    let www = tempfile::tempdir().unwrap();
    let Some(server) = fetch_servers::python_http(www.path()) else {
        return;
    };
    // A health URL on a real web server that answers 404 with its HTML error page.
    let page = support::http_get(server.port, "/no-such-health").unwrap();
    assert_eq!(page.0, 404);
    assert!(page.1.contains("<html"), "{}", page.1);
    f.set_deployment(
        "1.0.0",
        "hello",
        &format!(
            "  - type: http\n    name: front\n    url: http://127.0.0.1:{}/no-such-health\n    retries: 3\n    interval_s: 1\n",
            server.port
        ),
    );
    f.commit("a health check against a missing page");
    let o = f.run(&[], &[]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{}", both(&o));
    let run = run_id(&out);
    let row = summary_row(&out, "sbx-1");
    assert!(row.contains("unhealthy after 3 probes"), "{row}");
    assert!(
        row.ends_with(&format!("(full text: history show {run})")),
        "{row}"
    );
    assert!(
        !out.contains("<html") && !out.contains("<!DOCTYPE"),
        "{out}"
    );
    let shown = history_show(&f, &run);
    assert!(
        !shown.contains("<html") && !shown.contains("<!DOCTYPE"),
        "{shown}"
    );
    assert!(shown.contains("status 404"), "{shown}");
    // python's error page is titled "Error response": the host's message and the failed
    // step each say it once (not once per probe, and not the page's markup).
    let (host, steps) = shown.split_once("DEPLOYMENT").unwrap();
    assert_eq!(host.matches("Error response").count(), 1, "{shown}");
    assert_eq!(steps.matches("Error response").count(), 1, "{shown}");
    // On stdout the failure is short everywhere: the step line, the end, the summary.
    assert!(!out.contains("Error response"), "{out}");
}
