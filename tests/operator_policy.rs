//! Security review, finding 8, with the real binary on copies of the example repository:
//! credentials over plain `http://` warn in `validate` and fail it for `prod` unless the
//! operator passes `--allow-http-credentials`; a `file` repository outside the config
//! repository fails `validate` (and planning) unless the operator allows its directory with
//! `--allow-file-root`. The repository itself cannot widen either.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("config");
    support::copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("example-config-repo"),
        &repo,
    );
    (dir, repo)
}

fn run(repo: &Path, args: &[&str]) -> (i32, String) {
    let o: Output = Command::new(support::clarity_bin())
        .arg("--repo")
        .arg(repo)
        .args(args)
        .env_remove("CLARITY_AGE_IDENTITY")
        .env_remove("CLARITY_ALLOW_FILE_ROOTS")
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// 1-based line of the first line of `file` starting with `prefix`.
fn line_of(file: &Path, prefix: &str) -> usize {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .position(|l| l.starts_with(prefix))
        .unwrap()
        + 1
}

#[test]
fn credentials_over_plain_http_warn_and_fail_for_prod_unless_allowed() {
    let (_dir, repo) = copy();
    let (code, out) = run(&repo, &["validate", "--deny-warnings"]);
    assert_eq!(code, 0, "the example must start clean:\n{out}");
    let file = repo.join("repositories/releases.yml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("url: https://", "url: http://")).unwrap();
    let url_line = line_of(&file, "url:");
    let (code, out) = run(&repo, &["validate"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "repositories/releases.yml:{url_line}:6: warning[plain-http-credentials]"
        )),
        "{out}"
    );
    let prod = "clients/nordtel/deployments/smsgateway/prod.yml";
    let artifact_line = line_of(&repo.join(prod), "artifact:");
    assert!(
        out.contains(&format!(
            "{prod}:{artifact_line}:11: error[plain-http-credentials]"
        )),
        "{out}"
    );
    // Non-prod profiles only warn.
    let errors: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("error[plain-http-credentials]"))
        .collect();
    assert!(errors.iter().all(|l| l.contains("/prod.yml:")), "{out}");
    let (code, out) = run(&repo, &["--allow-http-credentials", "validate"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("warning[plain-http-credentials]"), "{out}");
    let (code, out) = run(
        &repo,
        &["--allow-http-credentials", "validate", "--deny-warnings"],
    );
    assert_eq!(code, 1, "{out}");
}

#[test]
fn a_file_repository_outside_the_config_repository_needs_an_allowed_root() {
    let (dir, repo) = copy();
    let outside = dir.path().join("artifacts");
    std::fs::create_dir_all(&outside).unwrap();
    let file = repo.join("repositories/demo-files.yml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace("path: files", &format!("path: {}", outside.display())),
    )
    .unwrap();
    let line = line_of(&file, "path:");
    let (code, out) = run(&repo, &["validate"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "repositories/demo-files.yml:{line}:7: error[path-escape]"
        )) && out.contains("--allow-file-root"),
        "{out}"
    );
    // Planning refuses too, before any host is touched.
    let work = dir.path().join("work");
    let (code, out) = run(
        &repo,
        &[
            "--profile",
            "mock",
            "--dry-run",
            "--work-dir",
            work.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("nothing was planned"), "{out}");
    // A root that only shares a prefix, or a path that climbs out of the root, does not count.
    let sibling = format!("{}-x", outside.display());
    let (code, out) = run(&repo, &["--allow-file-root", &sibling, "validate"]);
    assert_eq!(code, 1, "{out}");
    std::fs::write(
        &file,
        text.replace(
            "path: files",
            &format!("path: {}/../../etc", outside.display()),
        ),
    )
    .unwrap();
    let (code, out) = run(
        &repo,
        &["--allow-file-root", outside.to_str().unwrap(), "validate"],
    );
    assert_eq!(code, 1, "{out}");
    // Allowed by the operator, it validates.
    std::fs::write(
        &file,
        text.replace("path: files", &format!("path: {}", outside.display())),
    )
    .unwrap();
    let (code, out) = run(
        &repo,
        &["--allow-file-root", outside.to_str().unwrap(), "validate"],
    );
    assert_eq!(code, 0, "{out}");
}
