//! `clarity-reconcile rollback`: undo a bad release the GitOps way. It finds the version that
//! was last healthy on every host (from the ledger) and writes a commit to the config
//! repository that sets the deployment back to it. No host is switched behind git's back: the
//! next apply of that commit does the switching, with the usual plan, health checks and record.

use super::reach::ReachArgs;
use super::reconcile::{ApplyOptions, TargetArgs};
use super::{CliError, CliResult, Exit, GlobalArgs, IdentityArgs, SelectionArgs, StateArgs};
use crate::load::Step;
use crate::source::{self, ReadMode};
use clap::Args;

/// Roll a deployment back by committing its previous healthy version to the config
/// repository (then apply that commit as usual). Needs --client and --profile.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The deployment (artifact) to roll back.
    #[arg(long)]
    pub deployment: String,
    /// Roll back to this version instead of the last one healthy on every host.
    #[arg(long, value_name = "VERSION")]
    pub to: Option<String>,
    /// Why, for the commit message.
    #[arg(long, default_value = "requested by an operator")]
    pub reason: String,
    /// Push the commit to the config repository's `origin`.
    #[arg(long)]
    pub push: bool,
    /// Also switch the hosts now (applying the rollback commit for this deployment only) and
    /// pin them in the ledger at that version, so applying the branch before the revert is
    /// merged does not switch them forward again. The pin is released by the first apply that
    /// brings the pinned version from the repository.
    #[arg(long)]
    pub emergency: bool,
    #[command(flatten)]
    pub selection: SelectionArgs,
    #[command(flatten)]
    pub state: StateArgs,
    /// For the secrets the emergency apply needs.
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// For the emergency apply.
    #[command(flatten)]
    pub reach: ReachArgs,
}

pub fn run(global: &GlobalArgs, args: &RollbackArgs) -> CliResult {
    let (Some(client), Some(profile)) = (&args.selection.client, &args.selection.profile) else {
        return Err(CliError::new("rollback needs --client and --profile").hint(
            "e.g. clarity-reconcile rollback --client acme --profile prod --deployment smsgateway",
        ));
    };
    let snapshot = source::read(&global.repo, &ReadMode::Commit("HEAD".into()))?;
    let loaded = crate::load::load(&snapshot);
    let inv = &loaded.inventory;
    let doc = inv
        .clients
        .get(client)
        .and_then(|c| {
            c.deployments
                .get(&(args.deployment.clone(), profile.clone()))
        })
        .ok_or_else(|| {
            CliError::new(format!(
                "client `{client}` has no deployment `{}` in profile `{profile}`",
                args.deployment
            ))
            .hint(format!(
                "it would be clients/{client}/deployments/{}/{profile}.yml",
                args.deployment
            ))
        })?;
    let current = doc.value.version.clone();
    let ledger = crate::ledger::Ledger::open(&args.state.ledger_path())?;
    let history = ledger.deployment_history(client, &args.deployment, profile)?;
    let (target, evidence) = match &args.to {
        Some(v) => {
            let seen = history
                .iter()
                .find(|h| &h.version == v && h.healthy_everywhere);
            (
                v.clone(),
                seen.map(|h| {
                    format!(
                        "Last healthy on every host in run {} ({}).",
                        h.run_id, h.finished_at
                    )
                })
                .unwrap_or_else(|| {
                    "Chosen by the operator (--to); the ledger has no healthy run of it.".into()
                }),
            )
        }
        None => {
            let h = history.iter().find(|h| h.healthy_everywhere && h.version != current).ok_or_else(|| {
                CliError::new(format!(
                    "the ledger has no earlier version of `{}` ({client}, {profile}) that was healthy on every host",
                    args.deployment
                ))
                .hint("name the version with --to VERSION")
            })?;
            (
                h.version.clone(),
                format!(
                    "Last healthy on every host in run {} ({}).",
                    h.run_id, h.finished_at
                ),
            )
        }
    };
    if target == current {
        return Err(CliError::new(format!(
            "`{}` is already at version {current}",
            args.deployment
        )));
    }
    let artifact = inv.artifacts.get(&doc.value.artifact);
    if !artifact.is_some_and(|a| a.value.versions.iter().any(|v| v.version == target)) {
        return Err(CliError::new(format!(
            "artifact `{}` has no version `{target}` at HEAD",
            doc.value.artifact
        ))
        .hint("a rollback can only pick a version the artifact file still lists"));
    }

    let repo = git2::Repository::discover(&global.repo)
        .map_err(|e| CliError::new(format!("cannot open the config repository: {e}")))?;
    let workdir = repo
        .workdir()
        .ok_or_else(|| CliError::new("the config repository has no work tree"))?
        .to_path_buf();
    let rel = if snapshot.prefix.is_empty() {
        doc.file.clone()
    } else {
        format!("{}/{}", snapshot.prefix, doc.file)
    };
    let path = workdir.join(&rel);
    let committed = snapshot.text(&doc.file).unwrap_or_default();
    let on_disk = std::fs::read(&path)
        .map_err(|e| CliError::new(format!("cannot read {}: {e}", path.display())))?;
    if on_disk != committed {
        return Err(
            CliError::new(format!("{rel} has uncommitted changes")).hint(
                "commit or discard them first, so the rollback commit changes only the version",
            ),
        );
    }
    // Change only the version's value, keeping the file's layout and comments.
    let pos = doc.pos(&[Step::Key("version")]);
    let text = String::from_utf8_lossy(&on_disk).into_owned();
    let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    let line = lines
        .get_mut(pos.line as usize - 1)
        .ok_or_else(|| CliError::new(format!("{rel}: cannot find the version line")))?;
    let start = line
        .char_indices()
        .nth(pos.column as usize - 1)
        .map(|(i, _)| i)
        .unwrap_or(line.len());
    let rest = &line[start..];
    let comment = rest
        .find(" #")
        .map(|i| rest[i..].to_string())
        .unwrap_or_default();
    *line = format!("{}\"{target}\"{comment}", &line[..start]);
    let new_text = lines.join("\n");
    std::fs::write(&path, &new_text)
        .map_err(|e| CliError::new(format!("cannot write {}: {e}", path.display())))?;

    let message = format!(
        "Roll back {deployment} for {client} in {profile}: {current} -> {target}\n\n\
         Reason: {reason}\n{evidence}\n\nClarity-Rollback: {client}/{deployment}/{profile} {current} -> {target}\n",
        deployment = args.deployment,
        reason = args.reason
    );
    let commit = commit_file(&repo, &rel, &message).map_err(|e| {
        let _ = std::fs::write(&path, &on_disk);
        CliError::new(format!("cannot commit the rollback: {e}"))
    })?;
    println!(
        "committed {commit}: {} {current} -> {target} ({client}, {profile})",
        args.deployment
    );
    if args.push {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(&workdir)
            .args(["push", "origin", "HEAD"])
            .output()
            .map_err(|e| CliError::new(format!("cannot run git push: {e}")))?;
        if !out.status.success() {
            return Err(CliError::new("git push failed")
                .hint(String::from_utf8_lossy(&out.stderr).trim().to_string()));
        }
        println!("pushed to origin");
    }
    if !args.emergency {
        println!(
            "apply it with: clarity-reconcile --repo {} --rev {commit} --client {client} --profile {profile}",
            global.repo.display()
        );
        return Ok(Exit::Ok);
    }
    println!("emergency: applying {commit} to {} now", args.deployment);
    let apply_global = GlobalArgs {
        rev: Some(commit.to_string()),
        ..global.clone()
    };
    let hosts = TargetArgs {
        selection: SelectionArgs {
            server: None,
            ..args.selection.clone()
        },
        deployment: Some(args.deployment.clone()),
        prune: false,
        allow_unreachable: false,
        base: None,
        assume_empty_hosts: false,
        state: args.state.clone(),
        identity: args.identity.clone(),
        reach: args.reach.clone(),
    };
    let apply = ApplyOptions {
        lock_timeout: 300,
        max_cache: None,
        // The target version already ran healthy here; the gate is for promotion.
        skip_promotion_gate: true,
        push_notes: false,
    };
    let applied = super::reconcile::run(&apply_global, &hosts, Some(&apply))?;
    if applied != Exit::Ok {
        return Err(CliError::new(
            "the emergency apply did not converge every host; nothing was pinned",
        )
        .hint("see the per-host results above; the rollback commit is in place"));
    }
    let mut ledger = crate::ledger::Ledger::open(&args.state.ledger_path())?;
    ledger.pin(&crate::ledger::Pin {
        client: client.clone(),
        deployment: args.deployment.clone(),
        profile: profile.clone(),
        version: target.clone(),
        commit: commit.to_string(),
        reason: args.reason.clone(),
        created_at: crate::clock::now_rfc3339(),
    })?;
    println!(
        "pinned {client}/{}/{profile} at {target} until a commit with that version is applied (merge {commit})",
        args.deployment
    );
    Ok(Exit::Ok)
}

/// Commits the work-tree content of `rel` on top of HEAD.
fn commit_file(
    repo: &git2::Repository,
    rel: &str,
    message: &str,
) -> Result<git2::Oid, git2::Error> {
    let mut index = repo.index()?;
    index.add_path(std::path::Path::new(rel))?;
    index.write()?;
    let tree = repo.find_tree(index.write_tree()?)?;
    let parent = repo.head()?.peel_to_commit()?;
    let sig = repo
        .signature()
        .or_else(|_| git2::Signature::now("clarity-reconcile", "clarity-reconcile@localhost"))?;
    repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &[&parent])
}
