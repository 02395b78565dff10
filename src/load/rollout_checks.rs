//! Checks of a deployment's `rollout:` that the schema cannot express: a pause after the
//! canary needs a canary to pause after. Pure, like the rest of `load`.

use super::Inventory;
use super::yaml::Step::Key as K;
use crate::diag::Diagnostic;
use crate::model::PauseAfterCanary;

pub(super) fn run(inv: &Inventory, out: &mut Vec<Diagnostic>) {
    for entry in inv.clients.values() {
        for doc in entry.deployments.values() {
            let Some(r) = &doc.value.rollout else {
                continue;
            };
            let pauses = r
                .pause_after_canary
                .is_some_and(|p| p != PauseAfterCanary::Flag(false));
            if pauses && r.canary.is_none() {
                out.push(
                    Diagnostic::error(
                        "rollout-pause-without-canary",
                        &doc.file,
                        doc.pos(&[K("rollout"), K("pause_after_canary")]),
                        "`rollout.pause_after_canary` needs `rollout.canary`: there is no canary batch to pause after",
                    )
                    .with_hint("add `canary: 1` (or a percentage) to the rollout, or remove pause_after_canary"),
                );
            }
        }
    }
}
