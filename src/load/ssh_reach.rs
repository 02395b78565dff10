//! Checks of how a server is reached over SSH that no schema can express: a jump host must be
//! `[user@]host[:port]` (one bastion), and `sudo` is for a user other than root. Pure: the
//! reconciler's ssh config, which may fill in what a server file leaves out, is read only when
//! hosts are contacted.

use super::yaml::Step::Key as K;
use super::{Doc, Inventory};
use crate::diag::Diagnostic;
use crate::model::{Server, Transport};
use crate::transport::ssh_config::JumpSpec;

/// Every SSH server's `agent.ssh` settings.
pub(super) fn check(inv: &Inventory, out: &mut Vec<Diagnostic>) {
    for entry in inv.clients.values() {
        for doc in entry.servers.values() {
            server(doc, out);
        }
    }
}

fn server(doc: &Doc<Server>, out: &mut Vec<Diagnostic>) {
    let agent = &doc.value.agent;
    let Some(ssh) = agent
        .ssh
        .as_ref()
        .filter(|_| agent.transport == Transport::Ssh)
    else {
        return;
    };
    if let Some(jump) = ssh
        .proxy_jump
        .as_deref()
        .filter(|j| !j.eq_ignore_ascii_case("none"))
        && let Err(e) = JumpSpec::parse(jump)
    {
        out.push(
            Diagnostic::error(
                "invalid-value",
                &doc.file,
                doc.pos(&[K("agent"), K("ssh"), K("proxy_jump")]),
                format!("agent.ssh.proxy_jump: {e}"),
            )
            .with_hint("write `bastion`, `ops@bastion.example:2222` or `none`"),
        );
    }
    if ssh.sudo && ssh.user.as_deref() == Some("root") {
        out.push(
            Diagnostic::warning(
                "unsafe-setting",
                &doc.file,
                doc.pos(&[K("agent"), K("ssh"), K("sudo")]),
                "agent.ssh.sudo with user `root`: sudo changes nothing for root",
            )
            .with_hint("log in as the deploy user the sudoers rule names (`agent.ssh.user`)"),
        );
    }
}
