//! The rollout order a plan shows: per deployment file with a `rollout:` section, its batches
//! (the canary first), the failure budget and whether it pauses after the canary, as the
//! fleet apply will run them (`apply::rollout` cuts both). Rendering only; no I/O.

use schemars::JsonSchema;
use serde::Serialize;

/// One rollout unit's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct RolloutOrder {
    /// `client/deployment/profile`.
    pub unit: String,
    /// In the order they run.
    pub batches: Vec<PlannedBatch>,
    /// Failed hosts tolerated across the rollout; one more halts it.
    pub max_failures: u32,
    /// The rollout stops after a healthy canary until `resume` (or the timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_after_canary: Option<PlannedPause>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct PlannedBatch {
    pub hosts: Vec<String>,
    pub canary: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct PlannedPause {
    /// Seconds after which the watch loop resumes by itself (`None`: only `resume` does).
    pub timeout_s: Option<u64>,
}

/// One line per unit: `rollout c/d/p: canary h1; then h2 | h3; max_failures 0; pauses ...`.
/// Batches are separated by ` | `, hosts within a batch by `, `.
pub fn lines(order: &[RolloutOrder]) -> Vec<String> {
    order
        .iter()
        .map(|u| {
            let joined = |b: &PlannedBatch| b.hosts.join(", ");
            let (canary, rest): (Vec<&PlannedBatch>, Vec<&PlannedBatch>) =
                u.batches.iter().partition(|b| b.canary);
            let rest = rest
                .iter()
                .map(|b| joined(b))
                .collect::<Vec<_>>()
                .join(" | ");
            let mut line = format!("rollout {}: ", u.unit);
            match canary.first() {
                Some(c) if rest.is_empty() => line.push_str(&format!("canary {}", joined(c))),
                Some(c) => line.push_str(&format!("canary {}; then {rest}", joined(c))),
                None => line.push_str(&format!("batches {rest}")),
            }
            line.push_str(&format!("; max_failures {}", u.max_failures));
            if let Some(p) = &u.pause_after_canary {
                line.push_str("; pauses after the canary until `resume`");
                if let Some(t) = p.timeout_s {
                    line.push_str(&format!(" or {t} s"));
                }
            }
            line
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(hosts: &[&str], canary: bool) -> PlannedBatch {
        PlannedBatch {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            canary,
        }
    }

    #[test]
    fn one_line_per_unit_with_canary_batches_budget_and_pause() {
        let order = vec![
            RolloutOrder {
                unit: "acme/app/prod".into(),
                batches: vec![
                    batch(&["h1"], true),
                    batch(&["h2", "h3"], false),
                    batch(&["h4"], false),
                ],
                max_failures: 1,
                pause_after_canary: Some(PlannedPause {
                    timeout_s: Some(1800),
                }),
            },
            RolloutOrder {
                unit: "acme/db/prod".into(),
                batches: vec![batch(&["h1", "h2"], false)],
                max_failures: 0,
                pause_after_canary: None,
            },
        ];
        assert_eq!(
            lines(&order),
            vec![
                "rollout acme/app/prod: canary h1; then h2, h3 | h4; max_failures 1; pauses after the canary until `resume` or 1800 s",
                "rollout acme/db/prod: batches h1, h2; max_failures 0",
            ]
        );
    }
}
