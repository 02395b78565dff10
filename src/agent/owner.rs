//! Which client a deployment directory on a host belongs to. The first apply of a deployment
//! records its client in `<deployment>/client`; an apply (or a removal) for another client is
//! refused before anything on the host changes, so a server declared with another client's
//! sandbox root or address cannot switch that client's release or rewrite its env file. Touches
//! only the marker files below the deployments directory.

use super::files::write_owned;
use super::layout::Layout;
use crate::model::apply::ApplyRequest;
use std::path::PathBuf;

/// The marker's name inside a deployment directory.
pub const OWNER_FILE: &str = "client";

fn marker(layout: &Layout, deployment: &str) -> PathBuf {
    layout.deployment_dir(deployment).join(OWNER_FILE)
}

/// The client recorded for `deployment`, if any.
pub fn owner(layout: &Layout, deployment: &str) -> Result<Option<String>, String> {
    let path = marker(layout, deployment);
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("read {}: {e}", path.display())),
    }
}

fn refuse(layout: &Layout, req: &ApplyRequest, deployment: &str, other: &str) -> String {
    format!(
        "deployment `{deployment}` on host `{}` belongs to client `{other}` ({}); this apply is for client `{}`: refused, nothing was changed",
        req.host,
        layout.deployment_dir(deployment).display(),
        req.client
    )
}

/// Checks every deployment the request touches against its recorded client, then records the
/// request's client where none is recorded yet (a new deployment, or one installed before
/// ownership was recorded). All checks run before the first marker is written.
pub fn claim(layout: &Layout, req: &ApplyRequest) -> Result<(), String> {
    let touched: Vec<&str> = req
        .deployments
        .iter()
        .map(|d| d.name.as_str())
        .chain(req.remove.iter().map(String::as_str))
        .collect();
    let mut unclaimed = Vec::new();
    for name in &touched {
        match owner(layout, name)? {
            Some(c) if c == req.client => {}
            Some(c) => return Err(refuse(layout, req, name, &c)),
            None => unclaimed.push(*name),
        }
    }
    for name in unclaimed {
        if req.remove.iter().any(|r| r == name) {
            continue;
        }
        let dir = layout.deployment_dir(name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        write_owned(
            &marker(layout, name),
            format!("{}\n", req.client).as_bytes(),
            0o644,
            None,
        )
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}
