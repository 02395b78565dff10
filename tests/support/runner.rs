//! Runs the real `clarity-reconcile` binary and hands back what a script sees: the exit code,
//! and stdout and stderr normalised so that they can be compared with snapshots. The test's
//! own temporary paths become named placeholders; commit ids, run ids and times are masked.
//! It never changes what the program printed otherwise: `caused by:` and `hint:` lines stay.

use std::path::{Path, PathBuf};
use std::process::Command;

/// One run of the binary.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The run as one text for a snapshot: the exit code, then both streams.
    pub fn snapshot(&self) -> String {
        format!(
            "exit: {}\n--- stdout\n{}--- stderr\n{}",
            self.code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "killed".into()),
            self.stdout,
            self.stderr
        )
    }
}

/// How to run the binary: the working directory, the environment, and the paths to replace
/// by placeholders.
pub struct Runner {
    dir: PathBuf,
    env: Vec<(String, String)>,
    placeholders: Vec<(String, String)>,
}

impl Runner {
    /// Runs in `dir`, with a clean environment for the variables Clarity reads.
    pub fn new(dir: &Path) -> Runner {
        Runner {
            dir: dir.to_path_buf(),
            env: vec![("NO_COLOR".into(), "1".into())],
            placeholders: Vec::new(),
        }
        .placeholder(dir, "[DIR]")
    }

    /// Prints `path` as `name` (the longest path is replaced first).
    pub fn placeholder(mut self, path: &Path, name: &str) -> Runner {
        let text = path.display().to_string();
        if let Ok(real) = path.canonicalize() {
            let real = real.display().to_string();
            if real != text {
                self.placeholders.push((real, name.to_string()));
            }
        }
        self.placeholders.push((text, name.to_string()));
        self.placeholders
            .sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Runner {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new(super::clarity_bin());
        cmd.args(args).current_dir(&self.dir);
        for var in [
            "CLARITY_AGE_IDENTITY",
            "CLARITY_STATE_DIR",
            "CLARITY_WORK_DIR",
            "CLARITY_ALLOW_ENV",
            "CLARITY_ALLOW_FILE_ROOTS",
            "CLARITY_LOG",
            "CREDENTIALS_DIRECTORY",
        ] {
            cmd.env_remove(var);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("the binary runs");
        Run {
            code: out.status.code(),
            stdout: self.normalise(&String::from_utf8_lossy(&out.stdout)),
            stderr: self.normalise(&String::from_utf8_lossy(&out.stderr)),
        }
    }

    fn normalise(&self, text: &str) -> String {
        let mut text = text.to_string();
        for (path, name) in &self.placeholders {
            text = text.replace(path.as_str(), name);
        }
        let masks = [
            (r"\b\d{8}T\d{6}Z-[0-9a-f]{8}\b", "[RUN]"),
            (r"\b\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z\b", "[TIME]"),
            (r"\b[0-9a-f]{40}\b", "[COMMIT]"),
            (r"\b[0-9a-f]{12}\b", "[COMMIT]"),
        ];
        for (pattern, mask) in masks {
            text = regex::Regex::new(pattern)
                .unwrap()
                .replace_all(&text, mask)
                .into_owned();
        }
        text
    }
}
