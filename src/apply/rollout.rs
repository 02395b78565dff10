//! Rollout scheduling: in what order, and how many at a time, hosts receive a deployment. Each
//! deployment file (client × artifact × profile) is one rollout unit: its changing hosts in
//! target priority order, an optional canary batch that must be fully healthy before anything
//! else is touched, then batches of `batch_size`, all under one failure budget (`max_failures`)
//! counted across the whole rollout, not per batch. Units run in artifact dependency order.
//! A unit may pause after a healthy canary (`pause_after_canary`) until it is resumed; a
//! resumed unit cuts no canary again.
//! Pure: the fleet apply (`super::fleet`) asks this module what to run next, and the plan
//! shows the same batches (`planned_order`).

use crate::desired::DesiredHost;
use crate::model::{CountOrPercent, Rollout};
use crate::plan::{Change, HostPlan};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// `client/deployment/profile`.
    pub key: String,
    pub client: String,
    pub deployment: String,
    pub profile: String,
    /// Hosts with changes for this deployment, in rollout order (priority, then name).
    pub hosts: Vec<String>,
    /// `None`: no `rollout:` section, so every host at once and no budget.
    pub rollout: Option<Rollout>,
    /// Artifacts this deployment depends on.
    pub depends_on: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub hosts: Vec<String>,
    /// A canary batch: any failure halts the rollout.
    pub canary: bool,
}

impl Unit {
    pub fn batches(&self) -> Vec<Batch> {
        let n = self.hosts.len();
        let Some(r) = &self.rollout else {
            return vec![Batch {
                hosts: self.hosts.clone(),
                canary: false,
            }];
        };
        let mut out = Vec::new();
        let mut rest: &[String] = &self.hosts;
        if let Some(c) = r.canary {
            let size = c.of(n).clamp(1, n.max(1)).min(rest.len());
            if size > 0 {
                out.push(Batch {
                    hosts: rest[..size].to_vec(),
                    canary: true,
                });
                rest = &rest[size..];
            }
        }
        let size = r.batch_size.of(n).max(1);
        for chunk in rest.chunks(size) {
            out.push(Batch {
                hosts: chunk.to_vec(),
                canary: false,
            });
        }
        out
    }

    /// The unit as a resumed run continues it: its canary already ran, so its other hosts go
    /// in batches under the same failure budget, without a canary and without pausing again.
    pub fn resumed(mut self) -> Unit {
        if let Some(r) = &mut self.rollout {
            r.canary = None;
            r.pause_after_canary = None;
        }
        self
    }

    /// Failed hosts tolerated across the whole rollout; one more halts it.
    pub fn failure_budget(&self) -> usize {
        match &self.rollout {
            None => usize::MAX,
            Some(r) => match r.max_failures {
                CountOrPercent::Count(c) => c as usize,
                p => p.of(self.hosts.len()),
            },
        }
    }
}

/// The rollout units of a planned fleet, in the order they run: per deployment file, its hosts
/// with changes (removals are not rolled out) in priority order, then name, from the planned
/// hosts' desired states and plans, pairwise.
pub fn units<'a>(planned: impl IntoIterator<Item = (&'a DesiredHost, &'a HostPlan)>) -> Vec<Unit> {
    let mut units: BTreeMap<String, (Unit, Vec<(i32, String)>)> = BTreeMap::new();
    for (d, p) in planned {
        for dp in p
            .deployments
            .iter()
            .filter(|dp| !dp.steps.is_empty() && dp.change != Change::Delete)
        {
            let Some(dd) = d.deployments.iter().find(|x| x.name == dp.name) else {
                continue;
            };
            let key = format!("{}/{}/{}", d.client, dd.name, dd.profile);
            let entry = units.entry(key.clone()).or_insert_with(|| {
                (
                    Unit {
                        key,
                        client: d.client.clone(),
                        deployment: dd.name.clone(),
                        profile: dd.profile.clone(),
                        hosts: Vec::new(),
                        rollout: dd.rollout.clone(),
                        depends_on: dd.depends_on.clone(),
                    },
                    Vec::new(),
                )
            });
            entry.1.push((dd.priority, d.server.clone()));
        }
    }
    let units = units
        .into_values()
        .map(|(mut u, mut hs)| {
            hs.sort();
            u.hosts = hs.into_iter().map(|(_, h)| h).collect();
            u
        })
        .collect();
    order(units)
}

/// The order a plan shows for the units that have a `rollout:` section (a unit without one
/// goes to all its hosts at once, as plans always said).
pub fn planned_order(units: &[Unit]) -> Vec<crate::plan::RolloutOrder> {
    units
        .iter()
        .filter_map(|u| {
            let r = u.rollout.as_ref()?;
            Some(crate::plan::RolloutOrder {
                unit: u.key.clone(),
                batches: u
                    .batches()
                    .into_iter()
                    .map(|b| crate::plan::PlannedBatch {
                        hosts: b.hosts,
                        canary: b.canary,
                    })
                    .collect(),
                max_failures: u32::try_from(u.failure_budget()).unwrap_or(u32::MAX),
                pause_after_canary: r
                    .pause_after_canary
                    .and_then(|p| p.pause())
                    .filter(|_| r.canary.is_some())
                    .map(|timeout_s| crate::plan::PlannedPause { timeout_s }),
            })
        })
        .collect()
}

/// Units ordered so that a deployment comes after those its artifact depends on (for the same
/// client and profile), then by key.
pub fn order(mut units: Vec<Unit>) -> Vec<Unit> {
    units.sort_by(|a, b| a.key.cmp(&b.key));
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::new();
    let by_key: BTreeMap<String, Unit> = units.iter().map(|u| (u.key.clone(), u.clone())).collect();
    fn visit(
        u: &Unit,
        by_key: &BTreeMap<String, Unit>,
        done: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
        out: &mut Vec<Unit>,
    ) {
        if done.contains(&u.key) || stack.contains(&u.key) {
            return;
        }
        stack.push(u.key.clone());
        for dep in &u.depends_on {
            let key = format!("{}/{dep}/{}", u.client, u.profile);
            if let Some(d) = by_key.get(&key) {
                visit(d, by_key, done, stack, out);
            }
        }
        stack.pop();
        done.insert(u.key.clone());
        out.push(u.clone());
    }
    for u in &units {
        visit(u, &by_key, &mut done, &mut Vec::new(), &mut out);
    }
    out
}

/// What the executor should do after a batch finished with `failed` failures, given
/// `failed_so_far` before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Continue,
    Halt(String),
    /// The canary is healthy and the unit pauses: its other hosts wait, at most this many
    /// seconds when a timeout is set.
    Pause(Option<u64>),
}

pub fn after_batch(
    unit: &Unit,
    batch: &Batch,
    failed_in_batch: usize,
    failed_so_far: usize,
) -> Next {
    let total = failed_so_far + failed_in_batch;
    if batch.canary && failed_in_batch > 0 {
        return Next::Halt(format!(
            "the canary batch of `{}` failed on {failed_in_batch} host{}: the rest of its hosts were not touched",
            unit.key,
            if failed_in_batch == 1 { "" } else { "s" }
        ));
    }
    let budget = unit.failure_budget();
    if total > budget {
        return Next::Halt(format!(
            "`{}` exceeded its failure budget ({total} failed, max_failures {budget}): the rollout halted",
            unit.key
        ));
    }
    let pause = unit
        .rollout
        .as_ref()
        .and_then(|r| r.pause_after_canary)
        .and_then(|p| p.pause());
    match pause {
        Some(timeout) if batch.canary && batch.hosts.len() < unit.hosts.len() => {
            Next::Pause(timeout)
        }
        _ => Next::Continue,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Percent;

    fn unit(n: usize, rollout: Option<Rollout>) -> Unit {
        Unit {
            key: "c/app/prod".into(),
            client: "c".into(),
            deployment: "app".into(),
            profile: "prod".into(),
            hosts: (0..n).map(|i| format!("h{i}")).collect(),
            rollout,
            depends_on: vec![],
        }
    }

    fn sizes(u: &Unit) -> Vec<(usize, bool)> {
        u.batches()
            .iter()
            .map(|b| (b.hosts.len(), b.canary))
            .collect()
    }

    #[test]
    fn no_rollout_means_everything_at_once_without_budget() {
        let u = unit(5, None);
        assert_eq!(sizes(&u), vec![(5, false)]);
        assert_eq!(u.failure_budget(), usize::MAX);
    }

    #[test]
    fn canary_then_batches_by_count_or_percent() {
        let r = Rollout {
            batch_size: CountOrPercent::Count(2),
            canary: Some(CountOrPercent::Count(1)),
            max_failures: CountOrPercent::Count(0),
            pause_after_canary: None,
        };
        assert_eq!(
            sizes(&unit(6, Some(r))),
            vec![(1, true), (2, false), (2, false), (1, false)]
        );
        let r = Rollout {
            batch_size: CountOrPercent::Percent(Percent(25)),
            canary: None,
            max_failures: CountOrPercent::Percent(Percent(10)),
            pause_after_canary: None,
        };
        let u = unit(10, Some(r));
        assert_eq!(
            sizes(&u),
            vec![(3, false), (3, false), (3, false), (1, false)]
        );
        assert_eq!(u.failure_budget(), 1);
    }

    #[test]
    fn budget_is_counted_across_batches_and_canary_halts_on_any_failure() {
        let r = Rollout {
            batch_size: CountOrPercent::Count(2),
            canary: Some(CountOrPercent::Count(1)),
            max_failures: CountOrPercent::Count(1),
            pause_after_canary: None,
        };
        let u = unit(5, Some(r));
        let b = u.batches();
        assert!(matches!(after_batch(&u, &b[0], 1, 0), Next::Halt(m) if m.contains("canary")));
        assert_eq!(after_batch(&u, &b[1], 1, 0), Next::Continue);
        assert!(
            matches!(after_batch(&u, &b[2], 1, 1), Next::Halt(m) if m.contains("failure budget"))
        );
    }

    #[test]
    fn a_healthy_canary_pauses_and_a_resumed_unit_cuts_no_canary() {
        use crate::model::{PauseAfterCanary, PauseTimeout, Seconds};
        let r = Rollout {
            batch_size: CountOrPercent::Count(2),
            canary: Some(CountOrPercent::Count(1)),
            max_failures: CountOrPercent::Count(0),
            pause_after_canary: Some(PauseAfterCanary::Timeout(PauseTimeout {
                timeout: Seconds(90),
            })),
        };
        let u = unit(3, Some(r));
        let b = u.batches();
        assert_eq!(after_batch(&u, &b[0], 0, 0), Next::Pause(Some(90)));
        assert!(matches!(after_batch(&u, &b[0], 1, 0), Next::Halt(_)));
        assert_eq!(after_batch(&u, &b[1], 0, 0), Next::Continue);
        let mut resumed = u.clone().resumed();
        resumed.hosts = vec!["h1".into(), "h2".into()];
        assert_eq!(sizes(&resumed), vec![(2, false)]);
        assert_eq!(resumed.failure_budget(), 0);
        // A canary that is the whole rollout has nobody to hold back.
        let one = unit(1, u.rollout.clone());
        assert_eq!(after_batch(&one, &one.batches()[0], 0, 0), Next::Continue);
    }

    #[test]
    fn dependencies_order_units() {
        let mut a = unit(1, None);
        a.key = "c/app/prod".into();
        a.depends_on = vec!["db".into()];
        let mut d = unit(1, None);
        d.key = "c/db/prod".into();
        d.deployment = "db".into();
        let keys: Vec<String> = order(vec![a, d]).into_iter().map(|u| u.key).collect();
        assert_eq!(keys, vec!["c/db/prod", "c/app/prod"]);
    }
}
