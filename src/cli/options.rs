//! The option groups several commands share, each declared once and flattened into the
//! commands that use it: where the reconciler keeps its state ([`StateArgs`]), the identity
//! that decrypts secrets ([`IdentityArgs`]) and which servers a command is about
//! ([`SelectionArgs`]). How hosts are reached is its own group, [`super::reach::ReachArgs`].
//! The bare form (`clarity-reconcile --profile mock drift`) takes them before a subcommand too:
//! [`merged`] carries those over to the subcommand. Nothing here reads the repository or a
//! host.

use clap::{Args, FromArgMatches};
use std::path::PathBuf;

/// Where the reconciler keeps its state.
#[derive(Debug, Clone, Args)]
pub struct StateArgs {
    /// The reconciler's working directory: `local` sandboxes, the ledger (by default) and the
    /// watch loop's mirror live below it.
    #[arg(
        long,
        env = "CLARITY_WORK_DIR",
        default_value = ".clarity",
        value_name = "DIR"
    )]
    pub work_dir: PathBuf,
    /// The run ledger (SQLite). Default: `ledger.sqlite` in $CLARITY_STATE_DIR if set, else in
    /// the work directory.
    #[arg(long, value_name = "FILE")]
    pub ledger: Option<PathBuf>,
}

impl StateArgs {
    /// The ledger file these options name.
    pub fn ledger_path(&self) -> PathBuf {
        crate::ledger::resolve_path(self.ledger.as_deref(), &self.work_dir)
    }
}

/// The identity that decrypts secrets.
#[derive(Debug, Clone, Args)]
pub struct IdentityArgs {
    /// age identity file that decrypts secrets (AGE-SECRET-KEY-1... lines, as made by
    /// `age-keygen -o FILE`, or an unencrypted SSH private key). Default: $CLARITY_AGE_IDENTITY,
    /// else the service's `age-identity` systemd credential. Without one, plans show secrets
    /// as unknown.
    #[arg(long, value_name = "FILE")]
    pub age_identity: Option<PathBuf>,
}

/// Which servers a command is about.
#[derive(Debug, Clone, Default, Args)]
pub struct SelectionArgs {
    /// Only servers of this client.
    #[arg(long, value_name = "CLIENT")]
    pub client: Option<String>,
    /// Only deployments of this profile (dev, staging, prod, mock, ...); the reconcile and
    /// drift commands also take several, separated by commas (`staging,prod`).
    #[arg(long, value_name = "PROFILE")]
    pub profile: Option<String>,
    /// Only this server (host name).
    #[arg(long, value_name = "HOSTNAME")]
    pub server: Option<String>,
}

impl SelectionArgs {
    /// `--profile` as the list it is (`staging,prod` is two profiles), parsed here once so
    /// that no query ever sees the raw text; empty when not given.
    pub fn profiles(&self) -> Vec<String> {
        self.profile
            .iter()
            .flat_map(|p| p.split(','))
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// These options, with what was given before the subcommand where they say nothing.
    pub fn or(&self, before: &SelectionArgs) -> SelectionArgs {
        SelectionArgs {
            client: self.client.clone().or_else(|| before.client.clone()),
            profile: self.profile.clone().or_else(|| before.profile.clone()),
            server: self.server.clone().or_else(|| before.server.clone()),
        }
    }
}

/// A group's values when nothing is given (its declared defaults and environment).
pub fn defaults<T: Args + FromArgMatches>() -> T {
    let cmd = T::augment_args(clap::Command::new("defaults").no_binary_name(true));
    let matches = cmd
        .try_get_matches_from(std::iter::empty::<String>())
        .expect("an option group parses without arguments");
    T::from_arg_matches(&matches).expect("an option group's defaults are its own type")
}

/// For each field, `after` (given after the subcommand) unless it is still its default, else
/// `before` (given before it): what `global = true` gave these options when every command
/// listed them.
pub fn merged<T: PartialEq + Clone>(after: &T, before: &T, default: &T) -> T {
    if after == default {
        before.clone()
    } else {
        after.clone()
    }
}
