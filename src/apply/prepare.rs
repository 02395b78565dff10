//! Preparing a run: from a snapshot of the config repository to every selected host's desired
//! state (`compute`), and from there, through the hosts' agents, to the plan (`plan`). The
//! command line, the watch loop and the drift run all prepare their runs here, with the same
//! operator inputs, so a commit is judged the same way whoever runs it. It prints nothing:
//! validation errors come back as diagnostics for the caller to show.

use super::error::RunError;
use super::fleet::Hosts;
use crate::desired::{self, Context, DesiredError, DesiredHost, InventorySecrets, Templates};
use crate::diag::{Diagnostic, Severity};
use crate::model::host::ActualHost;
use crate::plan::{self, HostPlan, HostStatus, Plan};
use crate::plan_cache::{self, PlanCache, Reuse};
use crate::source::{self, ReadMode, Snapshot};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// What the operator (never the repository) decides about a run: which hosts, which of the
/// reconciler's environment variables and files the repository may see, and how secrets are
/// decrypted.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub selection: desired::Selection,
    /// `--allow-env`: the only environment variables `${ENV:..}` may read.
    pub allow_env: Vec<String>,
    /// `--allow-file-root`, `--allow-http-credentials`.
    pub policy: crate::load::operator_policy::OperatorPolicy,
    /// `--age-identity` (else the environment's or the service credential's).
    pub age_identity: Option<PathBuf>,
    /// The run continues a rollout paused after its canary (`resume`).
    pub resuming: Option<Resuming>,
}

/// A run continuing a rollout that paused after its canary: the paused run and the hosts that
/// wait. Only they are planned, and their units cut no canary again.
#[derive(Debug, Clone)]
pub struct Resuming {
    pub run: String,
    pub hosts: Vec<String>,
}

impl Inputs {
    /// The checks that depend on the operator's choices rather than on the repository, run by
    /// `validate` and before every plan.
    pub fn operator_checks(&self, inv: &crate::load::Inventory) -> Vec<Diagnostic> {
        let mut out = crate::load::env_refs::check(inv, &self.allow_env);
        out.extend(crate::load::operator_policy::check(inv, &self.policy));
        out
    }
}

/// The inventory and every selected host's desired state at a snapshot (a host whose desired
/// state cannot be computed carries its errors instead).
pub struct Computed {
    pub inventory: crate::load::Inventory,
    pub desired: Vec<Result<DesiredHost, Vec<DesiredError>>>,
    /// The hosts are the waiting ones of a paused rollout (`Inputs::resuming`).
    pub resuming: Option<Resuming>,
    /// Deployment plans the plan cache holds, left out of `desired`; `plan` puts them back.
    pub reuse: Option<Reuse>,
}

/// Loads and validates the snapshot and computes every selected host's desired state; stops
/// with every validation error when the repository has any.
pub fn compute(snapshot: &Snapshot, inputs: &Inputs) -> Result<Computed, RunError> {
    compute_reusing(snapshot, inputs, None)
}

/// `compute`, leaving out the deployments whose plans `cache` holds (`plan` completes the
/// hosts with them). The cache is not used with an age identity, so nothing derived from a
/// decrypted secret is cached, nor for a deployment with a `rollout:` section, whose order
/// the plan cuts from its desired state.
pub fn compute_reusing(
    snapshot: &Snapshot,
    inputs: &Inputs,
    cache: Option<PlanCache>,
) -> Result<Computed, RunError> {
    let mut loaded = crate::load::load(snapshot);
    let operator_diags = inputs.operator_checks(&loaded.inventory);
    loaded.diagnostics.extend(operator_diags);
    let (templates, template_diags) = Templates::new(&loaded.inventory);
    if loaded.has_errors() || !template_diags.is_empty() {
        let mut all = loaded.diagnostics;
        all.extend(template_diags);
        let errors = all
            .sorted()
            .into_iter()
            .filter(|d| d.severity == Severity::Error)
            .collect();
        return Err(RunError::Invalid(errors));
    }
    let inv = &loaded.inventory;
    let identities = crate::secret::identities_from(inputs.age_identity.as_deref())
        .map_err(RunError::Identity)?;
    let identities_given = identities.is_some();
    let secrets = InventorySecrets::new(inv, identities);
    let ctx = Context {
        // Only what the operator allowed is visible to the repository at all.
        env: std::env::vars()
            .filter(|(k, _)| inputs.allow_env.contains(k))
            .collect(),
        allowed_env: inputs.allow_env.clone(),
        secrets: &secrets,
        lenient_env: false,
        config_root: Some(snapshot.root.clone()),
    };
    let reuse = cache.filter(|_| !identities_given).map(|cache| {
        let global = plan_cache::key::Global::new(
            snapshot,
            plan_cache::build(),
            &ctx.env,
            &ctx.allowed_env,
            ctx.config_root.as_deref(),
        );
        Reuse::new(
            cache,
            &global,
            snapshot,
            inv,
            &desired::targets(inv, &inputs.selection),
        )
    });
    let rolled_out = |t: &desired::Target| {
        inv.clients.get(t.client).is_some_and(|c| {
            c.deployments
                .get(&(t.artifact.to_string(), t.profile.to_string()))
                .is_some_and(|d| d.value.rollout.is_some())
        })
    };
    let mut desired = match &reuse {
        Some(r) => desired::hosts_except(inv, &templates, &inputs.selection, &ctx, &|t| {
            r.has(t) && !rolled_out(t)
        }),
        None => desired::hosts(inv, &templates, &inputs.selection, &ctx),
    };
    if let Some(r) = &inputs.resuming {
        desired.retain(|d| {
            let server = match d {
                Ok(h) => h.server.as_str(),
                Err(errors) => errors.first().map(|e| e.server.as_str()).unwrap_or(""),
            };
            r.hosts.iter().any(|h| h == server)
        });
    }
    Ok(Computed {
        inventory: loaded.inventory,
        desired,
        resuming: inputs.resuming.clone(),
        reuse,
    })
}

/// A snapshot computed and planned: what the plan shows is what an apply of it does.
pub struct Planned {
    pub snapshot: Snapshot,
    pub inventory: crate::load::Inventory,
    /// Pairwise with `plan.hosts`; `None` where the desired state could not be computed.
    pub desired: Vec<Option<DesiredHost>>,
    pub plan: Plan,
    /// The run continues this paused rollout.
    pub resuming: Option<Resuming>,
}

impl Planned {
    /// The planned hosts' desired states when every one of them could be computed: a
    /// repository that cannot be computed for a host is applied nowhere.
    pub fn applicable(&self) -> Option<Vec<DesiredHost>> {
        self.desired.iter().cloned().collect()
    }
}

/// Inspects every computed host and plans it. With `keep_connections`, a host with changes
/// keeps its connection for the apply that follows; every other host's is closed.
pub fn plan(
    hosts: &dyn Hosts,
    pool: &rayon::ThreadPool,
    snapshot: Snapshot,
    computed: Computed,
    prune: bool,
    keep_connections: bool,
) -> Planned {
    let Computed {
        inventory,
        desired,
        resuming,
        reuse,
    } = computed;
    let planned: Vec<(Option<DesiredHost>, HostPlan)> = pool.install(|| {
        desired
            .into_par_iter()
            .map(|d| match d {
                Err(errors) => (None, failed_host(&errors)),
                Ok(host) => {
                    let mut plan = plan_host(hosts, &host, prune);
                    if let Some(reuse) = &reuse {
                        reuse.complete(&mut plan);
                    }
                    if !keep_connections || plan.status != HostStatus::Changes {
                        hosts.release(&host.server);
                    }
                    (Some(host), plan)
                }
            })
            .collect()
    });
    let (desired, host_plans): (Vec<_>, Vec<_>) = planned.into_iter().unzip();
    let mut plan = Plan::new(
        snapshot.describe(),
        snapshot.commit().map(|c| c.to_string()),
        host_plans,
    );
    if let Some(reuse) = reuse {
        reuse.finish(&plan.hosts);
    }
    // The order the apply will take, cut by the same code as the apply's.
    let units: Vec<super::rollout::Unit> = super::rollout::units(
        desired
            .iter()
            .zip(&plan.hosts)
            .filter_map(|(d, p)| Some((d.as_ref()?, p))),
    )
    .into_iter()
    .map(|u| if resuming.is_some() { u.resumed() } else { u })
    .collect();
    plan.rollout = super::rollout::planned_order(&units);
    Planned {
        snapshot,
        inventory,
        desired,
        plan,
        resuming,
    }
}

fn failed_host(errors: &[DesiredError]) -> HostPlan {
    HostPlan {
        server: errors.first().map(|e| e.server.clone()).unwrap_or_default(),
        client: String::new(),
        status: HostStatus::Failed,
        errors: errors
            .iter()
            .map(|e| {
                let line = e.line.map(|l| format!(":{l}")).unwrap_or_default();
                let hint = e
                    .hint
                    .as_ref()
                    .map(|h| format!(" (hint: {h})"))
                    .unwrap_or_default();
                format!("{}{line}: {}{hint}", e.file, e.message)
            })
            .collect(),
        deployments: Vec::new(),
        no_longer_desired: Vec::new(),
    }
}

/// Inspects one host (or assumes it empty) and plans it.
pub fn plan_host(hosts: &dyn Hosts, host: &DesiredHost, prune: bool) -> HostPlan {
    let actual = if hosts.assume_empty() {
        Ok(ActualHost::empty(crate::agent::AGENT_VERSION))
    } else {
        hosts.inspect(host)
    };
    match actual {
        Ok(mut actual) => {
            if let Some(only) = hosts.only() {
                actual.deployments.retain(|name, _| name == only);
            }
            plan::host_plan(host, &actual, prune)
        }
        Err(e) => not_inspected(host, e),
    }
}

/// The plan of a host whose agent could not be asked what it runs: unreachable, or failed.
pub fn not_inspected(host: &DesiredHost, e: crate::transport::TransportError) -> HostPlan {
    HostPlan {
        server: host.server.clone(),
        client: host.client.clone(),
        status: if e.unreachable {
            HostStatus::Unreachable
        } else {
            HostStatus::Failed
        },
        errors: vec![e.message],
        deployments: Vec::new(),
        no_longer_desired: Vec::new(),
    }
}

/// Deployments whose inputs differ between `base` and the snapshot being planned: the
/// deployment file, the version entry of its artifact it uses, its repository, the templates
/// it renders and its client's secrets for the profile. Deployments that exist only in `base` count as changed (removed).
pub fn changed_since(
    repo: &Path,
    base: &str,
    head: &Snapshot,
    inv: &crate::load::Inventory,
) -> Result<plan::BaseComparison, source::SourceError> {
    let old = source::read(repo, &ReadMode::Commit(base.to_string()))?;
    let differs = |path: &str| old.text(path) != head.text(path);
    let old_inv = crate::load::load(&old).inventory;
    let mut deployments = std::collections::BTreeSet::new();
    for (client, entry) in &inv.clients {
        for ((artifact, profile), doc) in &entry.deployments {
            let d = &doc.value;
            let repository = d
                .repository
                .clone()
                .or_else(|| {
                    inv.artifacts
                        .get(artifact)
                        .map(|a| a.value.repository.clone())
                })
                .unwrap_or_default();
            let mut inputs = vec![
                doc.file.clone(),
                format!("repositories/{repository}.yml"),
                format!("secrets/{client}/{profile}.yml"),
            ];
            inputs.extend(
                d.config_files
                    .iter()
                    .filter_map(|f| f.template.as_ref())
                    .map(|t| format!("templates/{t}")),
            );
            // The artifact file is shared: only the version entry this deployment uses counts.
            let artifact_changed = differs(&format!("artifacts/{artifact}.yml"))
                && super::base_artifact::used_entry_changed(&old_inv, inv, artifact, &d.version);
            if artifact_changed || inputs.iter().any(|p| differs(p)) {
                deployments.insert(format!("{client}/{artifact}/{profile}"));
            }
        }
    }
    for path in old.files.keys() {
        if let ["clients", client, "deployments", artifact, file] =
            path.split('/').collect::<Vec<_>>().as_slice()
            && !head.files.contains_key(path)
        {
            deployments.insert(format!(
                "{client}/{artifact}/{} (removed)",
                file.trim_end_matches(".yml")
            ));
        }
    }
    Ok(plan::BaseComparison {
        base: base.to_string(),
        deployments: deployments.into_iter().collect(),
    })
}
