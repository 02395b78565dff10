//! Where the agent keeps things on a host, below one root (`/` on a real host, the sandbox
//! directory for `mock`). Every path the agent touches is built here, so a path from the config
//! repository is only ever joined below the root after `relative_path_problem` approved it.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Layout {
        Layout { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Agent state: the state file, the artifact cache, pidfiles, the lock and the journal.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join("var/lib/clarity")
    }

    pub fn state_file(&self) -> PathBuf {
        self.state_dir().join("state.json")
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.state_dir().join("cache")
    }

    /// Detached applies: one directory each, with its request, events and log.
    pub fn applies_dir(&self) -> PathBuf {
        self.state_dir().join("applies")
    }

    /// Where the reconciler installs the agent binary on an SSH host.
    pub fn agent_dir(&self) -> PathBuf {
        self.state_dir().join("agent")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.state_dir().join("run")
    }

    pub fn deployments_dir(&self) -> PathBuf {
        self.root.join("opt/clarity")
    }

    pub fn deployment_dir(&self, name: &str) -> PathBuf {
        self.deployments_dir().join(name)
    }

    pub fn releases_dir(&self, name: &str) -> PathBuf {
        self.deployment_dir(name).join("releases")
    }

    pub fn release_dir(&self, name: &str, release: &str) -> PathBuf {
        self.releases_dir(name).join(release)
    }

    pub fn current_link(&self, name: &str) -> PathBuf {
        self.deployment_dir(name).join("current")
    }

    pub fn env_file(&self, name: &str) -> PathBuf {
        self.deployment_dir(name).join("env")
    }

    pub fn pid_file(&self, name: &str) -> PathBuf {
        self.run_dir().join(format!("{name}.pid"))
    }

    /// An absolute destination from the config, placed below the root.
    pub fn host_path(&self, absolute: &str) -> PathBuf {
        self.root.join(absolute.trim_start_matches('/'))
    }
}
