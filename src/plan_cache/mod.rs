//! The plan cache: the plans of single deployments from an earlier `--dry-run
//! --assume-empty-hosts`, kept in the work directory (`<work-dir>/cache/plan/`, one file per
//! config repository) and reused when every input of a deployment is the same (see `key`).
//! A cache that does not check out (another format, build or repository, damaged bytes) is
//! ignored and rewritten, never trusted. It holds only plans as the user sees them (secrets
//! redacted) and is never used when an age identity is given, so nothing in it is derived from
//! a decrypted secret. It must not decide anything about validity: every run still loads and
//! validates the whole repository.

pub mod key;

use crate::plan::DeploymentPlan;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The cache file's format; part of every key, so a new format never reads an old entry.
pub const FORMAT: &str = "clarity.plan-cache/1";

/// The environment variable that makes a plan print its cache statistics on stderr.
pub const STATS_ENV: &str = "CLARITY_PLAN_CACHE_STATS";

/// One repository's cached deployment plans, keyed by `key::keys`.
pub struct PlanCache {
    path: PathBuf,
    repo: String,
    entries: HashMap<String, DeploymentPlan>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    format: String,
    build: String,
    repo: String,
    /// SHA-256 of the body (the line after the header), so damaged bytes are not trusted.
    body_sha256: String,
}

impl PlanCache {
    /// The cache of `repo_root` under `work_dir`; empty when there is none or it does not
    /// check out. `None` when the work dir does not exist: a plan never creates it.
    pub fn open(work_dir: &Path, repo_root: &Path) -> Option<PlanCache> {
        if !work_dir.is_dir() {
            return None;
        }
        let repo = repo_root.display().to_string();
        let name = crate::digest::sha256_hex(repo.as_bytes());
        let path = work_dir
            .join("cache")
            .join("plan")
            .join(format!("{}.json", &name[..16]));
        let entries = std::fs::read(&path)
            .ok()
            .and_then(|bytes| parse(&bytes, &repo))
            .unwrap_or_default();
        Some(PlanCache {
            path,
            repo,
            entries,
        })
    }

    pub fn get(&self, key: &str) -> Option<&DeploymentPlan> {
        self.entries.get(key)
    }

    /// Replaces the cache with exactly `entries` (this run's), written atomically: a
    /// temporary file in the same folder, then a rename.
    pub fn save(&self, entries: &BTreeMap<&str, &DeploymentPlan>) -> std::io::Result<()> {
        let body = serde_json::to_vec(entries).map_err(std::io::Error::other)?;
        let header = Header {
            format: FORMAT.into(),
            build: build().to_string(),
            repo: self.repo.clone(),
            body_sha256: crate::digest::sha256_hex(&body),
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".tmp-{}", std::process::id()));
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        serde_json::to_writer(&mut f, &header).map_err(std::io::Error::other)?;
        f.write_all(b"\n")?;
        f.write_all(&body)?;
        f.into_inner()
            .map_err(|e| e.into_error())?
            .sync_all()
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp);
            })?;
        std::fs::rename(&tmp, &self.path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }
}

fn parse(bytes: &[u8], repo: &str) -> Option<HashMap<String, DeploymentPlan>> {
    let newline = bytes.iter().position(|b| *b == b'\n')?;
    let header: Header = serde_json::from_slice(&bytes[..newline]).ok()?;
    let body = &bytes[newline + 1..];
    if header.format != FORMAT
        || header.build != build()
        || header.repo != repo
        || header.body_sha256 != crate::digest::sha256_hex(body)
    {
        return None;
    }
    serde_json::from_slice(body).ok()
}

/// This program's build: its version and the size and modification time of its executable,
/// so that a rebuilt binary (whose plans may differ) never reads an older one's cache.
pub fn build() -> &'static str {
    static BUILD: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BUILD.get_or_init(|| {
        let exe = std::env::current_exe()
            .and_then(std::fs::metadata)
            .ok()
            .map(|m| {
                let modified = m
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_nanos())
                    .unwrap_or_default();
                format!("{} {modified}", m.len())
            })
            .unwrap_or_default();
        format!("{} {exe}", crate::agent::AGENT_VERSION)
    })
}

/// One run's use of the cache: which targets it already has plans for, and the keys under
/// which this run's plans are stored again.
pub struct Reuse {
    cache: PlanCache,
    /// server → its targets in plan order: (artifact, key).
    by_server: HashMap<String, Vec<(String, String)>>,
    /// Artifact → the artifacts it depends on, for the order of a host's deployments.
    dependencies: BTreeMap<String, Vec<String>>,
    total: usize,
    reused: usize,
}

impl Reuse {
    pub fn new(
        cache: PlanCache,
        global: &key::Global,
        snapshot: &crate::source::Snapshot,
        inv: &crate::load::Inventory,
        targets: &[crate::desired::Target],
    ) -> Reuse {
        let keys = key::keys(global, snapshot, inv, targets);
        let mut by_server: HashMap<String, Vec<(String, String)>> = HashMap::new();
        let mut reused = 0;
        for t in targets {
            if let Some(k) = keys.get(&(t.server.to_string(), t.artifact.to_string())) {
                reused += usize::from(cache.get(k).is_some());
                by_server
                    .entry(t.server.to_string())
                    .or_default()
                    .push((t.artifact.to_string(), k.clone()));
            }
        }
        Reuse {
            cache,
            by_server,
            dependencies: inv
                .artifacts
                .iter()
                .map(|(name, a)| (name.clone(), a.value.dependencies.clone()))
                .collect(),
            total: targets.len(),
            reused,
        }
    }

    fn key(&self, server: &str, artifact: &str) -> Option<&str> {
        self.by_server
            .get(server)?
            .iter()
            .find(|(a, _)| a == artifact)
            .map(|(_, k)| k.as_str())
    }

    /// Whether the cache has the plan of `t` (so it need not be computed).
    pub fn has(&self, t: &crate::desired::Target) -> bool {
        self.key(t.server, t.artifact)
            .is_some_and(|k| self.cache.get(k).is_some())
    }

    /// Adds the cached deployment plans to a host planned without them, in the order the
    /// host's full plan has (dependencies first), and sets its status from all of them.
    pub fn complete(&self, host: &mut crate::plan::HostPlan) {
        use crate::plan::{Change, HostStatus};
        if !matches!(host.status, HostStatus::Changes | HostStatus::Unchanged) {
            return;
        }
        let Some(targets) = self.by_server.get(&host.server) else {
            return;
        };
        let mut plans: BTreeMap<String, DeploymentPlan> = std::mem::take(&mut host.deployments)
            .into_iter()
            .map(|d| (d.name.clone(), d))
            .collect();
        for (artifact, key) in targets {
            if !plans.contains_key(artifact)
                && let Some(p) = self.cache.get(key)
            {
                plans.insert(artifact.clone(), p.clone());
            }
        }
        let graph: BTreeMap<String, Vec<String>> = plans
            .keys()
            .map(|n| {
                (
                    n.clone(),
                    self.dependencies.get(n).cloned().unwrap_or_default(),
                )
            })
            .collect();
        host.deployments = crate::desired::dependency_order(&graph)
            .into_iter()
            .filter_map(|n| plans.remove(&n))
            .collect();
        host.status = if host.deployments.iter().any(|d| d.change != Change::None) {
            HostStatus::Changes
        } else {
            HostStatus::Unchanged
        };
    }

    /// Writes this run's plans of fully planned hosts as the new cache; says on stderr what
    /// was reused when `CLARITY_PLAN_CACHE_STATS` is set. A cache that cannot be written is a
    /// warning: the plan itself is complete.
    pub fn finish(self, hosts: &[crate::plan::HostPlan]) {
        use crate::plan::HostStatus;
        let mut entries = BTreeMap::new();
        for h in hosts {
            if !matches!(h.status, HostStatus::Changes | HostStatus::Unchanged) {
                continue;
            }
            for d in &h.deployments {
                if let Some(k) = self.key(&h.server, &d.name) {
                    entries.insert(k, d);
                }
            }
        }
        if std::env::var_os(STATS_ENV).is_some() {
            eprintln!(
                "plan cache: {} of {} deployments recomputed",
                self.total - self.reused,
                self.total
            );
        }
        if let Err(e) = self.cache.save(&entries) {
            eprintln!(
                "warning: cannot write the plan cache {}: {e}",
                self.cache.path.display()
            );
        }
    }
}
