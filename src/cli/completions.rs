//! `completions`: shell completion scripts for bash, zsh and fish, generated from the same
//! argument definitions as `--help`, so they cannot drift from the binary; and the man pages
//! (one per command, `man/`), generated the same way and checked in. Prints only; installs
//! nothing.

use super::{Cli, CliResult, Exit};
use clap::{Args, CommandFactory, ValueEnum};

/// Print a shell completion script. Install it where your shell looks for completions, e.g.
/// `clarity-reconcile completions bash > /etc/bash_completion.d/clarity-reconcile`,
/// `clarity-reconcile completions zsh > "${fpath[1]}/_clarity-reconcile"` or
/// `clarity-reconcile completions fish > ~/.config/fish/completions/clarity-reconcile.fish`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

pub fn run(args: &CompletionsArgs) -> CliResult {
    print!("{}", script(args.shell));
    Ok(Exit::Ok)
}

/// The completion script for `shell`.
pub fn script(shell: Shell) -> String {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    let name = cmd.get_name().to_string();
    match shell {
        Shell::Bash => {
            clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, name, &mut out)
        }
        Shell::Zsh => clap_complete::generate(clap_complete::Shell::Zsh, &mut cmd, name, &mut out),
        Shell::Fish => {
            clap_complete::generate(clap_complete::Shell::Fish, &mut cmd, name, &mut out)
        }
    }
    String::from_utf8(out).expect("completion scripts are UTF-8")
}

/// Every man page: `clarity-reconcile.1` for the top level, `clarity-reconcile-<command>.1` for
/// each visible command and subcommand, as (file name, roff text).
pub fn man_pages() -> Vec<(String, String)> {
    fn render(cmd: clap::Command, name: String, out: &mut Vec<(String, String)>) {
        let mut text = Vec::new();
        clap_mangen::Man::new(cmd.clone().name(name.clone()))
            .date("")
            .render(&mut text)
            .expect("rendering into memory cannot fail");
        out.push((
            format!("{name}.1"),
            String::from_utf8(text).expect("man pages are UTF-8"),
        ));
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            if sub.get_name() == "help" {
                continue;
            }
            render(sub.clone(), format!("{name}-{}", sub.get_name()), out);
        }
    }
    let mut cmd = Cli::command();
    cmd.build();
    let name = cmd.get_name().to_string();
    let mut out = Vec::new();
    render(cmd, name, &mut out);
    out
}
