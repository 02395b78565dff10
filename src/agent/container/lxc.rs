//! LXC, driven through the `lxc-*` tools with an explicit container directory (`-P`). The agent
//! writes each release container's configuration itself (network, mounts, environment,
//! autostart, limits) and hands it to `lxc-create -t local` with the release's metadata and
//! rootfs tarballs. Env values land in that configuration file (readable by root only), never
//! on a command line.

use super::{Runtime, StepContext};
use crate::model::NetworkMode;
use crate::model::apply::WireContainer;
use crate::model::host::ContainerState;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where a release keeps its extracted metadata and rootfs tarballs.
pub const IMAGE_DIR: &str = "image";

/// The label line the agent appends to a container's config: LXC keeps comments.
const LABEL: &str = "# clarity.config = ";

/// The metadata and rootfs tarballs of an extracted `lxc` artifact.
pub fn image_files(dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    let mut meta = None;
    let mut rootfs = None;
    let entries = std::fs::read_dir(dir).map_err(|e| format!("read {}: {e}", dir.display()))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.contains(".tar") || !e.path().is_file() {
            continue;
        }
        if name.starts_with("meta") {
            meta = Some(e.path());
        } else if name.starts_with("rootfs") {
            rootfs = Some(e.path());
        }
    }
    match (meta, rootfs) {
        (Some(m), Some(r)) => Ok((m, r)),
        _ => Err(
            "an lxc artifact must hold a metadata tarball (meta.tar*) and a rootfs tarball (rootfs.tar*)"
                .into(),
        ),
    }
}

fn container_dir(rt: &Runtime, name: &str) -> PathBuf {
    rt.lxc_path
        .clone()
        .unwrap_or_else(|| PathBuf::from("/var/lib/lxc"))
        .join(name)
}

pub fn state(rt: &Runtime, name: &str) -> ContainerState {
    if !container_dir(rt, name).join("config").is_file() {
        return ContainerState::Missing;
    }
    if !rt.lxc_tool("lxc-info").is_file() {
        return ContainerState::Unknown;
    }
    match rt.run(&["lxc-info", "-n", name, "-s", "-H"]) {
        Ok(out) if out.trim() == "RUNNING" => ContainerState::Running,
        Ok(_) => ContainerState::Stopped,
        Err(_) => ContainerState::Unknown,
    }
}

/// The `clarity.config` label the agent wrote into the container's config.
pub fn config_label(rt: &Runtime, name: &str) -> Option<String> {
    let text = std::fs::read_to_string(container_dir(rt, name).join("config")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(LABEL))
        .map(|s| s.trim().to_string())
}

pub fn start(rt: &Runtime, name: &str) -> Result<(), String> {
    if state(rt, name) == ContainerState::Running {
        return Ok(());
    }
    rt.run(&["lxc-start", "-n", name])?;
    // lxc-start returns once the init is spawned; an init that dies at once shows here.
    let deadline = Instant::now() + Duration::from_millis(500);
    loop {
        std::thread::sleep(Duration::from_millis(100));
        match state(rt, name) {
            ContainerState::Running if Instant::now() >= deadline => return Ok(()),
            ContainerState::Running => {}
            other => {
                return Err(format!(
                    "container {name} is {other:?} right after lxc-start (its init exited)"
                )
                .to_lowercase());
            }
        }
    }
}

pub fn stop(rt: &Runtime, name: &str) -> Result<(), String> {
    // A short grace period: a busybox or shell init ignores SIGPWR, and the rollback path
    // must not wait a minute per container.
    rt.run(&["lxc-stop", "-n", name, "-t", "5"]).map(|_| ())
}

pub fn destroy(rt: &Runtime, name: &str) -> Result<(), String> {
    if state(rt, name) == ContainerState::Running {
        rt.run(&["lxc-stop", "-n", name, "-k"])?;
    }
    rt.run(&["lxc-destroy", "-n", name]).map(|_| ())
}

/// A value LXC reads up to the end of the line and splits on whitespace (`lxc.init.cmd`).
fn config_value(what: &str, v: &str, no_spaces: bool) -> Result<String, String> {
    if v.contains('\n') || (no_spaces && v.contains(char::is_whitespace)) {
        return Err(format!(
            "{what} `{v}` cannot be written into an LXC config (newline{})",
            if no_spaces { " or whitespace" } else { "" }
        ));
    }
    Ok(v.to_string())
}

/// The configuration the agent hands `lxc-create -f`.
fn config_text(
    ctx: &StepContext,
    wire: &WireContainer,
    release_dir: &Path,
) -> Result<String, String> {
    let s = &wire.settings;
    let mut c = String::new();
    match (s.network.mode, &s.network.bridge) {
        (NetworkMode::Host, _) => c.push_str("lxc.net.0.type = none\n"),
        (NetworkMode::None, _) => c.push_str("lxc.net.0.type = empty\n"),
        (NetworkMode::Bridge, Some(br)) => {
            c.push_str("lxc.net.0.type = veth\n");
            c.push_str(&format!(
                "lxc.net.0.link = {}\nlxc.net.0.flags = up\n",
                config_value("bridge", br, true)?
            ));
        }
        (NetworkMode::Bridge, None) => {
            return Err("an lxc container on network mode `bridge` needs `network.bridge`".into());
        }
    }
    // Without a console the container's init gets /dev/null instead of waiting on a tty.
    c.push_str("lxc.console.path = none\n");
    c.push_str(&format!("lxc.start.auto = {}\n", u8::from(wire.autostart)));
    for v in &s.volumes {
        c.push_str(&format!(
            "lxc.mount.entry = {} {} none bind{},create=dir 0 0\n",
            config_value(
                "volume",
                &ctx.layout.host_path(&v.host_path).display().to_string(),
                true
            )?,
            config_value("volume", v.container_path.trim_start_matches('/'), true)?,
            if v.read_only { ",ro" } else { "" }
        ));
    }
    if !ctx.dep.release_files.is_empty() {
        c.push_str(&format!(
            "lxc.mount.entry = {} {} none bind,ro,create=dir 0 0\n",
            config_value(
                "release directory",
                &release_dir.display().to_string(),
                true
            )?,
            config_value("config_dir", s.config_dir.trim_start_matches('/'), true)?
        ));
    }
    for (k, v) in &wire.env {
        c.push_str(&format!(
            "lxc.environment = {k}={}\n",
            config_value(&format!("env var {k}"), v.expose(), false).map_err(|_| format!(
                "env var `{k}` contains a newline, which an LXC config cannot carry"
            ))?
        ));
    }
    if let Some(cmd) = &s.command {
        let parts: Vec<String> = cmd
            .iter()
            .map(|a| config_value("command argument", a, true))
            .collect::<Result<_, _>>()?;
        c.push_str(&format!("lxc.init.cmd = {}\n", parts.join(" ")));
    }
    if let Some(l) = &s.limits {
        // The unified hierarchy has its own keys; a host on cgroup v1 (or hybrid) needs the
        // legacy ones, or the container does not start.
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").is_file();
        if let Some(m) = l.memory_mb {
            let bytes = m * 1024 * 1024;
            c.push_str(&if v2 {
                format!("lxc.cgroup2.memory.max = {bytes}\n")
            } else {
                format!("lxc.cgroup.memory.limit_in_bytes = {bytes}\n")
            });
        }
        if let Some(p) = l.cpu_percent {
            let quota = u64::from(p) * 1000;
            c.push_str(&if v2 {
                format!("lxc.cgroup2.cpu.max = {quota} 100000\n")
            } else {
                format!(
                    "lxc.cgroup.cpu.cfs_period_us = 100000\nlxc.cgroup.cpu.cfs_quota_us = {quota}\n"
                )
            });
        }
    }
    Ok(c)
}

pub fn create(
    rt: &Runtime,
    ctx: &StepContext,
    wire: &WireContainer,
    release_dir: &Path,
) -> Result<(), String> {
    let (meta, rootfs) = image_files(&release_dir.join(IMAGE_DIR))?;
    let conf = config_text(ctx, wire, release_dir)?;
    let conf_path =
        ctx.layout
            .run_dir()
            .join(format!(".{}-{}.conf", wire.name, std::process::id()));
    super::super::files::write_owned(&conf_path, conf.as_bytes(), 0o600, None)
        .map_err(|e| e.to_string())?;
    if let Some(p) = &rt.lxc_path {
        std::fs::create_dir_all(p).map_err(|e| format!("create {}: {e}", p.display()))?;
    }
    let conf_arg = conf_path.display().to_string();
    let meta_arg = meta.display().to_string();
    let rootfs_arg = rootfs.display().to_string();
    let result = rt.run(&[
        "lxc-create",
        "-n",
        &wire.name,
        "-f",
        &conf_arg,
        "-t",
        "local",
        "--",
        "--metadata",
        &meta_arg,
        "--fstree",
        &rootfs_arg,
    ]);
    let _ = std::fs::remove_file(&conf_path);
    result?;
    let config = container_dir(rt, &wire.name).join("config");
    let mut text =
        std::fs::read_to_string(&config).map_err(|e| format!("read {}: {e}", config.display()))?;
    text.push_str(&format!("{LABEL}{}\n", wire.config_sha256));
    super::super::files::write_owned(&config, text.as_bytes(), 0o600, None)
        .map_err(|e| e.to_string())
}
