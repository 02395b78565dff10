//! The plan cache of `--dry-run --assume-empty-hosts`, with the real binary on a real git
//! repository: what each kind of change recomputes (and nothing more), read from the
//! `CLARITY_PLAN_CACHE_STATS` line, and every cached plan byte-for-byte equal to the plan
//! computed without a cache. A damaged or foreign cache is ignored and rebuilt.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A public key only: the test never decrypts (the cache is not used with an identity).
const RECIPIENT: &str = "age19nul9pu70ce8fhqyter5qlypf39qkk7xl7797ww9dmrf4edqz98q20r2qg";

struct Repo {
    dir: tempfile::TempDir,
    work: PathBuf,
}

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn artifact(id: &str, template: Option<&str>) -> String {
    let sha = format!("{:064x}", id.len());
    let mut s = format!(
        "id: {id}\ntype: binary\nrepository: releases\nversions:\n  - version: \"1.0.0\"\n    sha256: \"{sha}\"\n    location: {id}/{id}-1.0.0\n    size: 100\n"
    );
    s.push_str(&format!("run:\n  command: [\"bin/{id}\"]\n"));
    if template.is_some() {
        s.push_str("# rendered from a template\n");
    }
    s
}

fn deployment(artifact: &str, servers: &[&str], extra: &str) -> String {
    let targets: String = servers
        .iter()
        .map(|s| format!("  - server: {s}\n"))
        .collect();
    format!(
        "artifact: {artifact}\nprofile: prod\nversion: \"1.0.0\"\ntargets:\n{targets}configuration:\n  port: 8080\n{extra}"
    )
}

impl Repo {
    /// acme with four servers: `web` on s1-s3 (template web/web.conf.j2), `api` on s2-s3
    /// (template api/api.conf.j2, env from secret `db_password`), `cron` on s1 and s4 (inline
    /// content). Seven deployments in all.
    fn new() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("config");
        write(&root, "clarity.yml", "keep_releases: 5\n");
        write(
            &root,
            "repositories/releases.yml",
            "name: releases\ntype: http\nurl: https://artifacts.example.net/releases\n",
        );
        write(&root, "artifacts/web.yml", &artifact("web", Some("web")));
        write(&root, "artifacts/api.yml", &artifact("api", Some("api")));
        write(&root, "artifacts/cron.yml", &artifact("cron", None));
        write(
            &root,
            "templates/web/web.conf.j2",
            "listen = {{ config.port }}\nserver = {{ server.hostname }}\n",
        );
        write(
            &root,
            "templates/api/api.conf.j2",
            "api on {{ server.hostname }} port {{ config.port }}\n",
        );
        write(
            &root,
            "clients/acme/client.yml",
            "id: acme\ncode: ACME\nname: Acme\nstatus: active\n",
        );
        write(
            &root,
            "clients/acme/datacenters/dc1.yml",
            "code: dc1\nname: DC 1\nlocation: Somewhere\ntype: primary\nsl_no: 1\n",
        );
        for (i, s) in ["s1", "s2", "s3", "s4"].iter().enumerate() {
            write(
                &root,
                &format!("clients/acme/servers/{s}.yml"),
                &format!(
                    "hostname: {s}\ndatacenter: dc1\nip_addresses:\n  - address: 198.18.0.{}\nspecifications: {{cpu_cores: 2, ram_gb: 4, disk_gb: 40}}\nvirtualization: vm\nos: {{family: debian, version: \"12\"}}\nagent:\n  transport: ssh\n  ssh: {{user: deploy, port: 22}}\n  service_manager: systemd\n",
                    i + 1
                ),
            );
        }
        let conf = |t: &str| {
            format!(
                "config_files:\n  - destination: conf/{t}.conf\n    template: {t}/{t}.conf.j2\n    mode: \"0640\"\n"
            )
        };
        write(
            &root,
            "clients/acme/deployments/web/prod.yml",
            &deployment("web", &["s1", "s2", "s3"], &conf("web")),
        );
        write(
            &root,
            "clients/acme/deployments/api/prod.yml",
            &deployment(
                "api",
                &["s2", "s3"],
                &format!(
                    "{}env_vars:\n  DB_PASSWORD: \"${{SECRET:db_password}}\"\n",
                    conf("api")
                ),
            ),
        );
        write(
            &root,
            "clients/acme/deployments/cron/prod.yml",
            &deployment(
                "cron",
                &["s1", "s4"],
                "config_files:\n  - destination: conf/cron.conf\n    content: \"every hour\\n\"\n    mode: \"0644\"\n",
            ),
        );
        write(
            &root,
            "secrets/acme/recipients.txt",
            &format!("{RECIPIENT}\n"),
        );
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        let repo = Repo { dir, work };
        repo.set_secret("db_password", "first password");
        repo.set_secret("other_token", "first token");
        support::git(&root, &["init", "-q"]);
        repo.commit("fleet");
        repo
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    fn write(&self, rel: &str, text: &str) {
        write(&self.root(), rel, text);
    }

    fn commit(&self, message: &str) {
        let root = self.root();
        support::git(&root, &["add", "-A"]);
        support::git(
            &root,
            &[
                "-c",
                "user.name=test",
                "-c",
                "user.email=test@clarity.invalid",
                "commit",
                "-qm",
                message,
            ],
        );
    }

    fn set_secret(&self, name: &str, value: &str) {
        let mut child = Command::new(support::clarity_bin())
            .arg("--repo")
            .arg(self.root())
            .args([
                "secret",
                "set",
                "--client",
                "acme",
                "--profile",
                "prod",
                name,
            ])
            .env_remove("CLARITY_AGE_IDENTITY")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(value.as_bytes())
            .unwrap();
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }

    fn plan_in(&self, work: &Path, output: &str) -> Output {
        let o = Command::new(support::clarity_bin())
            .arg("--repo")
            .arg(self.root())
            .args(["--rev", "HEAD", "--dry-run", "--assume-empty-hosts"])
            .args(["--output", output])
            .arg("--work-dir")
            .arg(work)
            .env_remove("CLARITY_AGE_IDENTITY")
            .env("CLARITY_PLAN_CACHE_STATS", "1")
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(2),
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }

    /// Plans with the cache, checks the plan (text and JSON) equals one computed without any
    /// cache, and returns how many deployments the cached run recomputed.
    fn recomputed(&self) -> usize {
        let cached = self.plan_in(&self.work, "text");
        let fresh = tempfile::tempdir().unwrap();
        let uncached = self.plan_in(fresh.path(), "text");
        assert_eq!(
            String::from_utf8_lossy(&cached.stdout),
            String::from_utf8_lossy(&uncached.stdout),
            "a cached plan differs from the plan computed without cache"
        );
        assert_eq!(stats(&uncached), (7, 7));
        let json = self.plan_in(&self.work, "json");
        let fresh_json = self.plan_in(fresh.path(), "json");
        assert_eq!(json.stdout, fresh_json.stdout);
        assert_eq!(stats(&json), (0, 7), "nothing changed between the two runs");
        stats(&cached).0
    }

    fn cache_file(&self) -> PathBuf {
        let dir = self.work.join("cache/plan");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1, "one cache file per repository: {files:?}");
        files.pop().unwrap()
    }
}

/// (recomputed, total) from the stats line on stderr.
fn stats(o: &Output) -> (usize, usize) {
    let err = String::from_utf8_lossy(&o.stderr);
    let line = err
        .lines()
        .find_map(|l| l.strip_prefix("plan cache: "))
        .unwrap_or_else(|| panic!("no stats line in:\n{err}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    (words[0].parse().unwrap(), words[2].parse().unwrap())
}

#[test]
fn each_change_recomputes_exactly_the_deployments_that_read_it() {
    let repo = Repo::new();
    assert_eq!(repo.recomputed(), 7, "a first plan computes everything");
    assert_eq!(
        repo.recomputed(),
        0,
        "an unchanged repository reuses everything"
    );

    // A template: the files rendered from it, i.e. `web` on s1, s2, s3.
    repo.write(
        "templates/web/web.conf.j2",
        "listen = {{ config.port }}\nserver = {{ server.hostname }}\nworkers = 4\n",
    );
    repo.commit("web template");
    assert_eq!(repo.recomputed(), 3);

    // A secret: the deployments that use it (`api` on s2, s3); one nobody uses: none.
    repo.set_secret("db_password", "second password");
    repo.commit("rotate db_password");
    assert_eq!(repo.recomputed(), 2);
    repo.set_secret("other_token", "second token");
    repo.commit("rotate other_token");
    assert_eq!(repo.recomputed(), 0);

    // A shared artifact file: every deployment of that artifact (`api` on s2, s3).
    repo.write(
        "artifacts/api.yml",
        &artifact("api", Some("api")).replace("bin/api", "bin/api-server"),
    );
    repo.commit("api command");
    assert_eq!(repo.recomputed(), 2);

    // One deployment file: that deployment on its targets (`cron` on s1, s4).
    repo.write(
        "clients/acme/deployments/cron/prod.yml",
        &deployment(
            "cron",
            &["s1", "s4"],
            "config_files:\n  - destination: conf/cron.conf\n    content: \"every minute\\n\"\n    mode: \"0644\"\n",
        ),
    );
    repo.commit("cron content");
    assert_eq!(repo.recomputed(), 2);

    // One server file: the deployments on that server (`web` and `cron` on s1).
    let s1 = std::fs::read_to_string(repo.root().join("clients/acme/servers/s1.yml")).unwrap();
    repo.write(
        "clients/acme/servers/s1.yml",
        &s1.replace("198.18.0.1", "198.18.0.11"),
    );
    repo.commit("s1 address");
    assert_eq!(repo.recomputed(), 2);

    // clarity.yml: everything.
    repo.write("clarity.yml", "keep_releases: 3\n");
    repo.commit("keep fewer releases");
    assert_eq!(repo.recomputed(), 7);
}

#[test]
fn a_damaged_or_foreign_cache_is_ignored_and_rebuilt() {
    let repo = Repo::new();
    assert_eq!(repo.recomputed(), 7);
    let file = repo.cache_file();

    // Damaged: one byte of a cached plan changed (the header's checksum no longer matches).
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes
        .windows(4)
        .rposition(|w| w == b"conf")
        .expect("the cache holds the plans' file names");
    bytes[at] = b'X';
    std::fs::write(&file, &bytes).unwrap();
    assert_eq!(repo.recomputed(), 7, "a damaged cache is not trusted");
    assert_eq!(repo.recomputed(), 0, "and is rebuilt");

    // Not JSON at all.
    std::fs::write(&file, b"\x00garbage").unwrap();
    assert_eq!(repo.recomputed(), 7);

    // Foreign: another repository's cache (with entries for the same file contents) in this
    // repository's place.
    let other = Repo::new();
    assert_eq!(other.recomputed(), 7);
    std::fs::copy(other.cache_file(), &file).unwrap();
    assert_eq!(
        repo.recomputed(),
        7,
        "another repository's cache is not used"
    );

    // An older format or another build: the header says so.
    let text = std::fs::read_to_string(&file).unwrap();
    let (header, body) = text.split_once('\n').unwrap();
    let mut header: serde_json::Value = serde_json::from_str(header).unwrap();
    header["build"] = "0.0.1 elsewhere".into();
    std::fs::write(&file, format!("{header}\n{body}")).unwrap();
    assert_eq!(repo.recomputed(), 7, "another build's cache is not used");
}

#[test]
fn no_cache_without_a_work_dir_and_no_secret_in_it() {
    let repo = Repo::new();
    let missing = repo.dir.path().join("no-such-work-dir");
    let o = repo.plan_in(&missing, "text");
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("plan cache:"),
        "a plan without a work dir uses no cache"
    );
    assert!(!missing.exists(), "a plan never creates the work dir");

    assert_eq!(repo.recomputed(), 7);
    let cache = std::fs::read_to_string(repo.cache_file()).unwrap();
    for secret in ["first password", "first token", "BEGIN AGE"] {
        assert!(!cache.contains(secret), "the cache holds `{secret}`");
    }
}
