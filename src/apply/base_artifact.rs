//! `--base`: whether the part of an artifact file a deployment uses changed between two
//! revisions. An artifact file is shared by every deployment of the artifact and gains a
//! version entry at each release; a deployment that still uses the old entry did not change.
//! It reads only the two parsed inventories, nothing on disk or on hosts.

use crate::load::Inventory;
use crate::model::Artifact;

/// The artifact `id` as seen by a deployment of `version`: every field, and of the versions
/// only that one (`None` when the artifact or the version does not exist in `inv`).
fn as_used(inv: &Inventory, id: &str, version: &str) -> Option<Artifact> {
    let mut artifact = inv.artifacts.get(id)?.value.clone();
    artifact.versions.retain(|v| v.version == version);
    (!artifact.versions.is_empty()).then_some(artifact)
}

/// The artifact `id` at `version` differs between `old` and `new` (or exists in only one).
pub fn used_entry_changed(old: &Inventory, new: &Inventory, id: &str, version: &str) -> bool {
    as_used(old, id, version) != as_used(new, id, version)
}
