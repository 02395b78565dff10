//! One pass of the loop, on a blocking thread: fetch, then for each followed branch apply its
//! new head if it is approved; or check for drift and heal what may be healed. Passes never
//! overlap: the loop waits for one before it starts the next.

use super::mirror::Mirror;
use super::{Config, Job, Pending, Runs, WatchStatus};
use crate::ledger::Ledger;
use crate::model::run::{RUN_FORMAT, RunMode, RunOutcome, RunRecord};
use crate::model::{DriftPolicy, NotifyEvent, Settings};
use crate::notify::Notifier;
use crate::serve::metrics::Metrics;
use crate::source::{self, ReadMode};
use git2::Oid;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

pub(super) struct Cycle {
    pub config: Config,
    pub mirror: Mirror,
    pub runs: Arc<dyn Runs>,
    pub metrics: Arc<Metrics>,
    pub notifier: Notifier,
    pub status: Arc<Mutex<WatchStatus>>,
}

/// A followed branch and the profiles it may deploy.
struct Branch {
    name: String,
    profiles: Vec<String>,
}

impl Cycle {
    pub fn run(&self, work: &Pending) {
        if work.fetch {
            if let Err(e) = self.mirror.fetch() {
                tracing::error!("fetching the config repository: {e}");
            } else {
                self.reconcile(work.force, &work.reasons.join(", "));
            }
        }
        if work.drift && !crate::apply::stop_requested() {
            self.drift();
        }
        self.busy(None);
    }

    fn busy(&self, what: Option<String>) {
        self.status.lock().expect("status lock").busy = what;
    }

    fn ledger(&self) -> Result<Ledger, String> {
        Ledger::open(&self.config.ledger).map_err(|e| e.to_string())
    }

    /// `clarity.yml` at the default branch's last applied commit (its head before the first
    /// apply): which branches are followed, what they deploy, where to notify.
    fn settings(&self, ledger: &Ledger) -> Option<Settings> {
        let branch = &self.config.default_branch;
        let commit = match approval_base(ledger, branch) {
            Some(c) if self.mirror.contains(&c) => c,
            _ => match self.mirror.head(branch) {
                Ok(Some(head)) => head.to_string(),
                Ok(None) => {
                    tracing::info!(
                        "the repository has no branch `{branch}` (--default-branch), whose clarity.yml says which branches to follow; nothing to do"
                    );
                    return None;
                }
                Err(e) => {
                    tracing::error!("{e}");
                    return None;
                }
            },
        };
        match source::read(&self.mirror.root, &ReadMode::Commit(commit.clone())) {
            Ok(snapshot) => {
                let loaded = crate::load::load(&snapshot);
                Some(loaded.inventory.settings)
            }
            Err(e) => {
                tracing::error!("reading clarity.yml of {branch} at {commit}: {e}");
                None
            }
        }
    }

    fn branches(&self, settings: &Settings) -> Vec<Branch> {
        let mut names: Vec<String> = if settings.branches.is_empty() {
            vec!["main".to_string()]
        } else {
            settings.branches.keys().cloned().collect()
        };
        // The default branch first: its clarity.yml decides for the others.
        names.sort_by_key(|n| *n != self.config.default_branch);
        names
            .into_iter()
            .map(|name| {
                let mut profiles = settings.profiles_of_branch(&name);
                if let Some(only) = &self.config.profiles {
                    profiles.retain(|p| only.contains(p));
                }
                Branch { name, profiles }
            })
            .filter(|b| !b.profiles.is_empty())
            .collect()
    }

    fn reconcile(&self, force: bool, reason: &str) {
        let Ok(ledger) = self.ledger().map_err(|e| tracing::error!("{e}")) else {
            return;
        };
        let Some(settings) = self.settings(&ledger) else {
            return;
        };
        self.notifier.set_targets(settings.notify.clone());
        self.release_paused(&ledger, &settings);
        let mut applied_default = false;
        for branch in self.branches(&settings) {
            if crate::apply::stop_requested() {
                return;
            }
            let head = match self.mirror.head(&branch.name) {
                Ok(Some(h)) => h,
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!("{e}");
                    continue;
                }
            };
            let attempted = ledger
                .last_applied_commit(&crate::ledger::AppliedFilter {
                    branch: Some(branch.name.clone()),
                    successful_only: false,
                    ..Default::default()
                })
                .ok()
                .flatten();
            // A head refused for want of a trusted base is judged again once the operator
            // names one.
            let naming_base =
                self.config.trust_from.is_some() && approval_base(&ledger, &branch.name).is_none();
            // A rollout paused after its canary waits for `resume` (or its timeout), even
            // when asked to reconcile: applying its commit again would cut a second canary.
            if let Some(a) = &attempted
                && a.outcome == RunOutcome::AwaitingApproval
                && a.commit == head.to_string()
            {
                if force {
                    tracing::info!(
                        "{}@{}: the rollout of run {} is paused after its canary; `clarity-reconcile resume {}` continues it",
                        branch.name,
                        &a.commit[..8],
                        a.run_id,
                        a.run_id
                    );
                }
                continue;
            }
            if !force && !naming_base && attempted.is_some_and(|a| a.commit == head.to_string()) {
                continue;
            }
            self.reconcile_branch(&ledger, &branch, head, reason);
            applied_default |= branch.name == self.config.default_branch;
        }
        // A new commit on the default branch may follow other branches or map them anew.
        if applied_default
            && let Some(after) = self.settings(&ledger)
            && (after.branches != settings.branches || after.profiles != settings.profiles)
        {
            tracing::info!("clarity.yml changed the followed branches; looking at them again");
            self.reconcile(false, reason);
        }
    }

    fn reconcile_branch(&self, ledger: &Ledger, branch: &Branch, head: Oid, reason: &str) {
        let short = &head.to_string()[..8];
        let _branch =
            tracing::info_span!("branch", branch = %branch.name, commit = short).entered();
        self.busy(Some(format!("reconcile {}@{short}", branch.name)));
        // The base comes from what this loop itself judged (or an operator named), never from
        // run records, which a rebuild takes from forgeable git notes.
        let mut base = approval_base(ledger, &branch.name);
        // Said in the log and recorded with the run's trigger: the run is a full reconcile.
        let mut lost_base = None;
        if let Some(b) = &base
            && !self.mirror.contains(b)
        {
            tracing::info!(
                "{}: the last approved commit {b} is not in the repository any more; no trusted base is known",
                branch.name
            );
            lost_base = Some(b.chars().take(8).collect::<String>());
            base = None;
        }
        if base.is_none()
            && let Some(named) = &self.config.trust_from
        {
            match self.name_base(&branch.name, named) {
                Ok(commit) => base = Some(commit),
                Err(why) => {
                    self.refuse(branch, head, &why);
                    return;
                }
            }
        }
        let base_oid = base.as_deref().and_then(|b| Oid::from_str(b).ok());
        let mut range_base = base_oid;
        if let Some(b) = base_oid
            && !self.mirror.is_ancestor(b, head).unwrap_or(false)
        {
            if !self.config.allow_rewrite {
                let why = format!(
                    "the history of `{}` was rewritten: the last applied commit {} is not an ancestor of {} (a force-push); start with --allow-rewrite to apply it",
                    branch.name,
                    &b.to_string()[..8],
                    short
                );
                self.refuse(branch, head, &why);
                return;
            }
            // The rewritten commits are judged from the last trusted commit, as any others.
            tracing::warn!(
                "{}: history rewritten (last applied {} is not an ancestor); --allow-rewrite: judging {short} from it",
                branch.name,
                &b.to_string()[..8]
            );
            range_base = Some(b);
        }
        if let Err(e) =
            crate::approval::check_range(&self.mirror.root, range_base, head, &self.config.approval)
        {
            let mut why = e.to_string();
            if let Some(h) = e.hint() {
                why.push_str(&format!(" (hint: {h})"));
            }
            // A verdict on a commit is recorded and stands until the branch moves; a check
            // that could not run (gpg missing or hung, a repository error) is tried again on
            // the next pass.
            if e.refused_commit().is_some() {
                self.refuse(branch, head, &why);
            } else {
                tracing::error!(
                    "{}@{short}: cannot check signatures, nothing applied; trying again on the next pass: {why}",
                    branch.name
                );
            }
            return;
        }
        match self.ledger() {
            Ok(mut l) => {
                if let Err(e) = l.record_approval_base(
                    &branch.name,
                    &head.to_string(),
                    crate::ledger::BaseReason::Approved,
                ) {
                    tracing::error!(
                        "{}@{short}: recording approval, nothing applied: {e}",
                        branch.name
                    );
                    return;
                }
            }
            Err(e) => {
                tracing::error!(
                    "{}@{short}: recording approval, nothing applied: {e}",
                    branch.name
                );
                return;
            }
        }
        if let Err(e) = self.mirror.checkout(head) {
            tracing::error!("{e}");
            return;
        }
        tracing::info!(
            "applying {}@{short} to {} ({reason})",
            branch.name,
            branch.profiles.join(", ")
        );
        let mut job = self.job(branch, head, None, trigger(reason));
        if let Some(lost) = lost_base {
            job.trigger.push_str(&format!(
                " (full reconcile: the last applied commit {lost} is not in the repository)"
            ));
        }
        if let Err(e) = self.runs.apply(&job) {
            tracing::error!("{}@{short}: {e}", branch.name);
        }
        self.after_run(ledger, &job, Some(head));
    }

    /// Resumes each paused run of a followed branch whose pause timed out, unless a newer run
    /// overtook one of its waiting hosts (then it stays paused: resuming would go backwards).
    fn release_paused(&self, ledger: &Ledger, settings: &Settings) {
        let Ok(paused) = ledger
            .paused_runs()
            .map_err(|e| tracing::error!("reading paused runs: {e}"))
        else {
            return;
        };
        let now = crate::clock::now_secs();
        let branches = self.branches(settings);
        for p in paused {
            let due = p
                .deadline
                .as_deref()
                .and_then(crate::clock::parse_rfc3339)
                .is_some_and(|d| d <= now);
            let Some(branch) = branches.iter().find(|b| Some(&b.name) == p.branch.as_ref()) else {
                continue;
            };
            if !due || crate::apply::stop_requested() {
                continue;
            }
            let Ok(oid) = Oid::from_str(&p.commit) else {
                continue;
            };
            if let Ok(Some(run)) = ledger.run(&p.id)
                && let Ok(Some((newer, host))) =
                    ledger.superseding_run(&p.id, &run.rollout.waiting_hosts())
            {
                // Said once per pass; the run stays paused in the ledger, as it is.
                tracing::info!(
                    "the pause of run {} timed out, but run {newer} has applied {host} since; not resuming it",
                    p.id
                );
                continue;
            }
            if let Err(e) = self.mirror.checkout(oid) {
                tracing::error!("{e}");
                continue;
            }
            self.busy(Some(format!("resume {}", p.id)));
            tracing::info!(
                "resuming run {} on {}: its pause after the canary timed out",
                p.id,
                branch.name
            );
            let mut job = self.job(branch, oid, None, "watch:timeout".into());
            job.resume = Some(p.id.clone());
            if let Err(e) = self.runs.apply(&job) {
                tracing::error!("resuming run {}: {e}", p.id);
            }
            self.after_run(ledger, &job, Some(oid));
        }
    }

    /// `--trust-from`: resolves the named commit in the mirror and records it as the branch's
    /// base, so the ledger says who vouched for what.
    fn name_base(&self, branch: &str, named: &str) -> Result<String, String> {
        let commit = self.mirror.resolve(named).map_err(|e| {
            format!("--trust-from {named}: not a commit of the repository ({e}); nothing applied")
        })?;
        let mut ledger = self.ledger()?;
        ledger
            .record_approval_base(
                branch,
                &commit.to_string(),
                crate::ledger::BaseReason::TrustFrom,
            )
            .map_err(|e| e.to_string())?;
        tracing::info!(
            "{branch}: judging from {commit}, named with --trust-from (recorded in the ledger)"
        );
        Ok(commit.to_string())
    }

    /// Records a commit the loop will not apply, so the refusal is in the ledger, the notes
    /// and the metrics, and is not repeated for the same head.
    fn refuse(&self, branch: &Branch, head: Oid, why: &str) {
        tracing::info!("refused: {}: {why}", branch.name);
        let (started_at, id) = crate::clock::run_started();
        let run = RunRecord {
            format: RUN_FORMAT.to_string(),
            id,
            commit: head.to_string(),
            branch: Some(branch.name.clone()),
            started_at: started_at.clone(),
            finished_at: started_at,
            trigger: "watch".into(),
            mode: RunMode::Apply,
            outcome: RunOutcome::Refused,
            message: Some(why.to_string()),
            hosts: Vec::new(),
            rollout: Default::default(),
            kind: Default::default(),
        };
        match self.ledger() {
            Ok(mut ledger) => {
                if let Err(e) = ledger.record_run(&run) {
                    tracing::error!("recording the refusal: {e}");
                }
            }
            Err(e) => tracing::error!("recording the refusal: {e}"),
        }
        if let Err(e) = crate::ledger::notes::write(&self.mirror.root, &run.commit, &run) {
            tracing::error!("writing the refusal's note: {e}");
        }
        self.push_notes();
        self.metrics.observe_run(&run, &[]);
        self.metrics.observe_refusal(&branch.name);
        self.notifier
            .send(NotifyEvent::Refused, crate::notify::run_payload(&run));
        self.status.lock().expect("status lock").last_run = Some(run.id);
    }

    fn job(
        &self,
        branch: &Branch,
        commit: Oid,
        deployment: Option<String>,
        trigger: String,
    ) -> Job {
        Job {
            repo: self.mirror.root.clone(),
            commit: commit.to_string(),
            branch: branch.name.clone(),
            profiles: branch.profiles.clone(),
            deployment,
            trigger,
            run: crate::clock::run_started(),
            resume: None,
        }
    }

    /// Metrics, notifications and notes for a run the job recorded; its drift findings.
    fn after_run(
        &self,
        ledger: &Ledger,
        job: &Job,
        applied: Option<Oid>,
    ) -> Vec<crate::model::run::DriftFinding> {
        let Ok(Some(run)) = ledger.run(&job.run.1) else {
            return Vec::new();
        };
        let findings = ledger.drift_findings(&run.id).unwrap_or_default();
        self.metrics.observe_run(&run, &findings);
        self.status.lock().expect("status lock").last_run = Some(run.id.clone());
        for (event, payload) in crate::notify::events_of(&run, findings.len()) {
            self.notifier.send(event, payload);
        }
        if let Some(commit) = applied
            && let Some(t) = self.mirror.commit_time(commit)
        {
            self.metrics.set_last_applied(&job.branch, t);
        }
        // Apply and drift runs alike leave a note.
        self.push_notes();
        findings
    }

    fn push_notes(&self) {
        if (self.mirror.local_git_dir.is_some() || self.config.push_notes)
            && let Err(e) = self.mirror.push_notes()
        {
            tracing::error!("pushing notes to the config repository: {e}");
        }
    }

    /// Detect-only drift checks of each followed branch's last applied commit, then a heal run
    /// for each drifted deployment marked `drift: heal`.
    fn drift(&self) {
        let Ok(ledger) = self.ledger().map_err(|e| tracing::error!("{e}")) else {
            return;
        };
        let Some(settings) = self.settings(&ledger) else {
            return;
        };
        for branch in self.branches(&settings) {
            if crate::apply::stop_requested() {
                return;
            }
            // The newest commit the branch's hosts all converged on: drift is judged (and
            // healed) from what runs, never from a commit that failed or rolled back.
            let Some(commit) = last_settled(&ledger, &branch.name) else {
                continue;
            };
            let Ok(oid) = Oid::from_str(&commit) else {
                continue;
            };
            if !self.mirror.contains(&commit) {
                continue;
            }
            self.busy(Some(format!("drift {}@{}", branch.name, &commit[..8])));
            let _branch =
                tracing::info_span!("branch", branch = %branch.name, commit = &commit[..8])
                    .entered();
            if let Err(e) = self.mirror.checkout(oid) {
                tracing::error!("{e}");
                continue;
            }
            let job = self.job(&branch, oid, None, "watch:drift".into());
            if let Err(e) = self.runs.drift(&job) {
                tracing::error!("drift check of {}: {e}", branch.name);
            }
            let findings = self.after_run(&ledger, &job, None);
            for deployment in self.to_heal(&job, &findings) {
                if crate::apply::stop_requested() {
                    return;
                }
                tracing::info!("healing drift of {deployment} on {}", branch.name);
                let heal = self.job(&branch, oid, Some(deployment), "watch:heal".into());
                if let Err(e) = self.runs.apply(&heal) {
                    tracing::error!("healing: {e}");
                }
                self.after_run(&ledger, &heal, None);
            }
        }
    }

    /// Drifted deployments whose file (in one of the job's profiles) says `drift: heal`.
    fn to_heal(&self, job: &Job, findings: &[crate::model::run::DriftFinding]) -> Vec<String> {
        if findings.is_empty() {
            return Vec::new();
        }
        let Ok(snapshot) = source::read(&job.repo, &ReadMode::Commit(job.commit.clone())) else {
            return Vec::new();
        };
        let inv = crate::load::load(&snapshot).inventory;
        let mut heal = BTreeSet::new();
        for f in findings {
            // Another process holds the port: no apply can free it, an operator must.
            if f.kind == "port-conflict" {
                continue;
            }
            let Some(entry) = inv.clients.get(&f.client) else {
                continue;
            };
            let marked = job.profiles.iter().any(|p| {
                entry
                    .deployments
                    .get(&(f.deployment.clone(), p.clone()))
                    .is_some_and(|d| d.value.drift == DriftPolicy::Heal)
            });
            if marked {
                heal.insert(f.deployment.clone());
            }
        }
        heal.into_iter().collect()
    }
}

fn trigger(reason: &str) -> String {
    if reason.contains("api") {
        "watch:api".into()
    } else if reason.contains("webhook") {
        "watch:webhook".into()
    } else {
        "watch".into()
    }
}

/// Where approval judges the branch's next commits from: the newest approval base.
fn approval_base(ledger: &Ledger, branch: &str) -> Option<String> {
    ledger.approval_base(branch).ok().flatten().map(|(c, _)| c)
}

/// The commit of the branch's newest apply run in which every host converged (or had nothing
/// to do).
fn last_settled(ledger: &Ledger, branch: &str) -> Option<String> {
    ledger
        .last_applied_commit(&crate::ledger::AppliedFilter {
            branch: Some(branch.to_string()),
            successful_only: true,
            ..Default::default()
        })
        .ok()
        .flatten()
        .map(|a| a.commit)
}
