//! Which processes listen on which ports, read from Linux's /proc, for drift's port-conflict
//! check: the sockets in /proc/net/{tcp,tcp6,udp,udp6} (TCP in LISTEN, UDP bound), the process
//! holding each (its fd links), and the deployment it belongs to. A process belongs to a
//! deployment when its working directory lies inside the deployment's directory: every
//! service manager starts a service in `<deployment>/current`. It only reads; a process it may
//! not look into is reported without a pid. Without /proc it reports nothing.

use super::layout::Layout;
use crate::model::host::Listener;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// TCP sockets in state LISTEN and bound UDP sockets: (port, protocol, socket inode).
fn sockets(proc: &Path) -> Vec<(u16, &'static str, u64)> {
    let mut out = Vec::new();
    for (file, protocol, state) in [
        ("net/tcp", "tcp", "0A"),
        ("net/tcp6", "tcp", "0A"),
        ("net/udp", "udp", "07"),
        ("net/udp6", "udp", "07"),
    ] {
        let Ok(text) = std::fs::read_to_string(proc.join(file)) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != state {
                continue;
            }
            let port = f[1]
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if let (Some(port), Ok(inode)) = (port, f[9].parse::<u64>())
                && port != 0
            {
                out.push((port, protocol, inode));
            }
        }
    }
    out
}

/// Socket inode → (pid, process name, working directory) for the inodes asked about.
fn holders(proc: &Path, wanted: &BTreeSet<u64>) -> BTreeMap<u64, (u32, String, Option<PathBuf>)> {
    let mut found = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(proc) else {
        return found;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(e.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let inode = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok());
            if let Some(inode) = inode.filter(|i| wanted.contains(i))
                && !found.contains_key(&inode)
            {
                let name = std::fs::read_to_string(e.path().join("comm"))
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default();
                let cwd = std::fs::read_link(e.path().join("cwd")).ok();
                found.insert(inode, (pid, name, cwd));
            }
        }
    }
    found
}

/// Every listening socket on the host, with its holder and the deployment (of `deployments`)
/// it belongs to, sorted by port.
pub fn listeners(layout: &Layout, deployments: &[String]) -> Vec<Listener> {
    listeners_in(Path::new("/proc"), layout, deployments)
}

fn listeners_in(proc: &Path, layout: &Layout, deployments: &[String]) -> Vec<Listener> {
    let sockets = sockets(proc);
    let wanted: BTreeSet<u64> = sockets.iter().map(|s| s.2).collect();
    let holders = holders(proc, &wanted);
    let dirs: Vec<(String, PathBuf)> = deployments
        .iter()
        .map(|d| {
            let dir = layout.deployment_dir(d);
            (d.clone(), dir.canonicalize().unwrap_or(dir))
        })
        .collect();
    let mut out: BTreeSet<Listener> = BTreeSet::new();
    for (port, protocol, inode) in sockets {
        let holder = holders.get(&inode);
        let deployment = holder
            .and_then(|(_, _, cwd)| cwd.as_ref())
            .and_then(|cwd| dirs.iter().find(|(_, dir)| cwd.starts_with(dir)))
            .map(|(d, _)| d.clone());
        out.insert(Listener {
            port,
            protocol: protocol.to_string(),
            pid: holder.map(|h| h.0),
            process: holder.map(|h| h.1.clone()).filter(|n| !n.is_empty()),
            deployment,
        });
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_socket_is_found_with_its_process_and_deployment() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let current = layout.deployment_dir("app").join("current");
        std::fs::create_dir_all(&current).unwrap();
        // This test process holds the socket; it runs outside any deployment.
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = socket.local_addr().unwrap().port();
        let found = listeners(&layout, &["app".to_string()]);
        let mine = found
            .iter()
            .find(|l| l.port == port && l.protocol == "tcp")
            .expect("the test's own socket");
        assert_eq!(mine.pid, Some(std::process::id()));
        assert_eq!(
            mine.deployment, None,
            "not inside the deployment's directory"
        );
        // A process started inside the deployment's directory is the deployment's.
        let mut child = std::process::Command::new("python3")
            .args(["-c", "import socket,sys,time; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(); print(s.getsockname()[1], flush=True); time.sleep(30)"])
            .current_dir(&current)
            .stdout(std::process::Stdio::piped())
            .spawn();
        let Ok(child) = child.as_mut() else { return };
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        let theirs: u16 = line.trim().parse().unwrap();
        let found = listeners(&layout, &["app".to_string()]);
        let _ = child.kill();
        let _ = child.wait();
        let l = found
            .iter()
            .find(|l| l.port == theirs)
            .expect("the child's socket");
        assert_eq!(l.pid, Some(child.id()));
        assert_eq!(l.deployment.as_deref(), Some("app"));
        assert_eq!(l.process.as_deref(), Some("python3"));
    }
}
