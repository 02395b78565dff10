//! Docker and Podman, driven through their command-line clients (the two accept the same
//! subcommands and options for everything used here). Image ids are written `sha256:<hex>`
//! whichever runtime reports them. Env values go to the runtime through `--env-file` (a file
//! readable by root only, deleted once the container exists), never through `-e`.

use super::{Runtime, RuntimeKind, StepContext};
use crate::model::apply::WireContainer;
use crate::model::host::ContainerState;
use crate::model::{NetworkMode, RestartPolicy};
use std::io::Read;
use std::path::Path;

/// The image id an image archive's `manifest.json` names (its config blob's digest): what the
/// runtime must report after loading it. OCI archives name `blobs/sha256/<hex>`, docker-save
/// archives `<hex>.json`.
pub fn manifest_image_id(archive: &Path) -> Result<String, String> {
    let file =
        std::fs::File::open(archive).map_err(|e| format!("open {}: {e}", archive.display()))?;
    let mut tar = tar::Archive::new(file);
    let entries = tar
        .entries()
        .map_err(|e| format!("read {}: {e}", archive.display()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("read {}: {e}", archive.display()))?;
        let is_manifest = entry
            .path()
            .is_ok_and(|p| p.to_string_lossy().trim_start_matches("./") == "manifest.json");
        if !is_manifest {
            continue;
        }
        let mut text = String::new();
        // A manifest is a few hundred bytes; a huge one is not an image archive.
        entry
            .by_ref()
            .take(1 << 20)
            .read_to_string(&mut text)
            .map_err(|e| format!("read manifest.json of {}: {e}", archive.display()))?;
        let manifest: Vec<serde_json::Value> = serde_json::from_str(&text)
            .map_err(|e| format!("manifest.json of {} is not valid: {e}", archive.display()))?;
        if manifest.len() != 1 {
            return Err(format!(
                "the image archive holds {} images; a docker artifact must hold exactly one",
                manifest.len()
            ));
        }
        let config = manifest[0]["Config"]
            .as_str()
            .ok_or("manifest.json names no image config")?;
        let hex = config
            .strip_prefix("blobs/sha256/")
            .or_else(|| config.strip_suffix(".json"))
            .unwrap_or(config);
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "manifest.json names config `{config}`, not a sha256 digest"
            ));
        }
        return Ok(format!("sha256:{}", hex.to_ascii_lowercase()));
    }
    Err(format!(
        "{} has no manifest.json: not a `docker save` or OCI image archive",
        archive.display()
    ))
}

fn normalize(id: &str) -> String {
    let id = id.trim();
    if id.starts_with("sha256:") {
        id.to_string()
    } else {
        format!("sha256:{id}")
    }
}

fn bare(id: &str) -> &str {
    id.strip_prefix("sha256:").unwrap_or(id)
}

/// The reference that names an image by id for this runtime.
fn image_ref(rt: &Runtime, id: &str) -> String {
    match rt.kind {
        RuntimeKind::Podman => bare(id).to_string(),
        _ => id.to_string(),
    }
}

/// The id of an image the runtime has, if it has it.
fn image_id(rt: &Runtime, id: &str) -> Option<String> {
    rt.run(&[
        "image",
        "inspect",
        "--format",
        "{{.Id}}",
        &image_ref(rt, id),
    ])
    .ok()
    .map(|s| normalize(&s))
}

/// Loads an image archive and returns its id, refusing when the runtime does not then have
/// exactly the image the archive's manifest names.
pub fn load(rt: &Runtime, archive: &Path) -> Result<String, String> {
    let expected = manifest_image_id(archive)?;
    if image_id(rt, &expected).as_deref() == Some(expected.as_str()) {
        return Ok(format!("{expected} (already loaded)"));
    }
    let archive_arg = archive.display().to_string();
    rt.run(&["load", "-i", &archive_arg])?;
    match image_id(rt, &expected) {
        Some(id) if id == expected => Ok(expected),
        Some(id) => Err(format!(
            "the loaded image has id {id}, but the archive's manifest names {expected}: refusing it"
        )),
        None => Err(format!(
            "after loading, the runtime has no image {expected} (the id the archive's manifest names): refusing the archive"
        )),
    }
}

/// What `inspect` says about a container.
pub struct Inspected {
    pub state: ContainerState,
    pub image: Option<String>,
    pub config_sha256: Option<String>,
}

/// A container's state, image and `clarity.config` label; `Err(Missing)` when the runtime has
/// no such container, `Err(Unknown)` when it could not be asked.
pub fn inspect(rt: &Runtime, name: &str) -> Result<Inspected, ContainerState> {
    if !rt.program.is_file() {
        return Err(ContainerState::Unknown);
    }
    let format = "{{.State.Status}}|{{.Image}}|{{index .Config.Labels \"clarity.config\"}}";
    match rt.run(&["container", "inspect", "--format", format, name]) {
        Ok(out) => {
            let mut parts = out.trim().splitn(3, '|');
            let status = parts.next().unwrap_or_default();
            let image = parts.next().filter(|s| !s.is_empty()).map(normalize);
            let label = parts
                .next()
                .filter(|s| !s.is_empty() && *s != "<no value>")
                .map(str::to_string);
            Ok(Inspected {
                state: if status == "running" {
                    ContainerState::Running
                } else {
                    ContainerState::Stopped
                },
                image,
                config_sha256: label,
            })
        }
        Err(e) if e.contains("no such") || e.contains("No such") => Err(ContainerState::Missing),
        Err(_) => Err(ContainerState::Unknown),
    }
}

pub fn start(rt: &Runtime, name: &str) -> Result<(), String> {
    rt.run(&["start", name])?;
    match inspect(rt, name) {
        Ok(i) if i.state == ContainerState::Running => Ok(()),
        _ => {
            let logs = rt.run(&["logs", "--tail", "5", name]).unwrap_or_default();
            Err(format!(
                "container {name} exited right after start{}",
                if logs.trim().is_empty() {
                    String::new()
                } else {
                    format!(": {}", super::last_lines(&logs))
                }
            ))
        }
    }
}

/// Whether any container (Clarity's or not) uses the image.
pub fn image_in_use(rt: &Runtime, image: &str) -> bool {
    let filter = format!("ancestor={}", image_ref(rt, image));
    rt.run(&["ps", "-a", "-q", "--filter", &filter])
        .map(|out| !out.trim().is_empty())
        .unwrap_or(true)
}

/// `create`: every setting of the deployment's `container:` as options, env through a file.
pub fn create(
    rt: &Runtime,
    ctx: &StepContext,
    wire: &WireContainer,
    release_dir: &Path,
    image: &str,
) -> Result<(), String> {
    let s = &wire.settings;
    let dep = ctx.dep;
    let mut argv: Vec<String> = vec!["create".into(), "--name".into(), wire.name.clone()];
    for (k, v) in [
        ("clarity.deployment", dep.name.as_str()),
        ("clarity.release", dep.release.as_str()),
        ("clarity.config", wire.config_sha256.as_str()),
    ] {
        argv.push("--label".into());
        argv.push(format!("{k}={v}"));
    }
    argv.push("--restart".into());
    argv.push(
        match wire.restart {
            // Not `always`: a kept (stopped) container of an earlier release would start
            // again with the daemon and fight the current one for its ports.
            RestartPolicy::Always => "unless-stopped",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Never => "no",
        }
        .into(),
    );
    if s.init {
        argv.push("--init".into());
    }
    for p in &s.ports {
        argv.push("--publish".into());
        argv.push(format!(
            "{}:{}/{}",
            p.host_side(),
            p.internal(),
            p.protocol.as_str()
        ));
    }
    for v in &s.volumes {
        argv.push("--volume".into());
        argv.push(format!(
            "{}:{}{}",
            ctx.layout.host_path(&v.host_path).display(),
            v.container_path,
            if v.read_only { ":ro" } else { "" }
        ));
    }
    if !dep.release_files.is_empty() {
        argv.push("--volume".into());
        argv.push(format!("{}:{}:ro", release_dir.display(), s.config_dir));
    }
    argv.push("--network".into());
    argv.push(match (s.network.mode, &s.network.bridge) {
        (NetworkMode::Bridge, Some(net)) => net.clone(),
        (mode, _) => mode.as_str().to_string(),
    });
    for d in &s.dns {
        argv.push("--dns".into());
        argv.push(d.clone());
    }
    if let Some(l) = &s.limits {
        if let Some(m) = l.memory_mb {
            argv.push("--memory".into());
            argv.push(format!("{m}m"));
        }
        if let Some(c) = l.cpu_percent {
            argv.push("--cpus".into());
            argv.push(format!("{}.{:02}", c / 100, c % 100));
        }
    }
    let env_file = ctx
        .layout
        .run_dir()
        .join(format!(".{}-{}.env", wire.name, std::process::id()));
    if !wire.env.is_empty() {
        let mut text = String::new();
        for (k, v) in &wire.env {
            // An env file holds one variable a line and no quoting: a newline cannot pass.
            if v.expose().contains('\n') {
                return Err(format!(
                    "env var `{k}` contains a newline, which a container env file cannot carry"
                ));
            }
            text.push_str(&format!("{k}={}\n", v.expose()));
        }
        super::super::files::write_owned(&env_file, text.as_bytes(), 0o600, None)
            .map_err(|e| e.to_string())?;
        argv.push("--env-file".into());
        argv.push(env_file.display().to_string());
    }
    argv.push(image_ref(rt, image));
    if let Some(cmd) = &s.command {
        argv.extend(cmd.iter().cloned());
    }
    let sub: Vec<&str> = argv.iter().map(String::as_str).collect();
    let result = rt.run(&sub);
    let _ = std::fs::remove_file(&env_file);
    result.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(dir: &Path, manifest: &str) -> std::path::PathBuf {
        let path = dir.join("image.tar");
        let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
        let mut h = tar::Header::new_gnu();
        h.set_size(manifest.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "manifest.json", manifest.as_bytes())
            .unwrap();
        b.finish().unwrap();
        path
    }

    #[test]
    fn the_image_id_comes_from_the_manifest_in_both_archive_formats() {
        let dir = tempfile::tempdir().unwrap();
        let hex = "ab".repeat(32);
        for config in [format!("{hex}.json"), format!("blobs/sha256/{hex}")] {
            let a = archive(
                dir.path(),
                &format!(r#"[{{"Config":"{config}","Layers":[]}}]"#),
            );
            assert_eq!(manifest_image_id(&a).unwrap(), format!("sha256:{hex}"));
        }
    }

    #[test]
    fn archives_with_two_images_or_no_digest_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let hex = "cd".repeat(32);
        let two = archive(
            dir.path(),
            &format!(r#"[{{"Config":"{hex}.json"}},{{"Config":"{hex}.json"}}]"#),
        );
        assert!(manifest_image_id(&two).unwrap_err().contains("2 images"));
        let odd = archive(dir.path(), r#"[{"Config":"../../etc/passwd"}]"#);
        assert!(
            manifest_image_id(&odd)
                .unwrap_err()
                .contains("not a sha256")
        );
        let none = dir.path().join("empty.tar");
        tar::Builder::new(std::fs::File::create(&none).unwrap())
            .finish()
            .unwrap();
        assert!(
            manifest_image_id(&none)
                .unwrap_err()
                .contains("no manifest.json")
        );
    }
}
