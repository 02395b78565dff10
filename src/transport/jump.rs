//! Reaching a host through a jump host (OpenSSH's `ProxyJump`): an SSH session with the bastion
//! opens a `direct-tcpip` channel to the host's sshd, and the host's own SSH session runs over
//! that channel, end to end encrypted, its host key verified exactly as for a direct
//! connection (the bastion sees only ciphertext, and its own key is verified before it is
//! asked for anything).
//!
//! libssh2 needs a real socket under a session, so the channel is bridged to one end of a
//! Unix socket pair by a thread that owns the bastion session: it moves bytes both ways until
//! either side closes, then says goodbye to the bastion. One bastion session per host
//! connection: a lost host connection is reconnected through a fresh one. This module opens no
//! connection of its own and never sees a credential.

use super::ssh::Connection;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use ssh2::{BlockDirections, Channel};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// Opens `host:port` as seen from the bastion `session` (logged in, host key verified) and
/// returns the local end of the bridge, for the host's session to run over. `timeout` bounds
/// opening the channel (the bastion connecting to the host).
pub(super) fn forward(
    bastion: Connection,
    tcp: std::net::TcpStream,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<UnixStream, String> {
    let session = &bastion.0;
    session.set_timeout(timeout.as_millis().clamp(1, u128::from(u32::MAX)) as u32);
    let channel = session
        .channel_direct_tcpip(host, port, None)
        .map_err(|e| format!("the jump host cannot open a connection to {host}:{port}: {e}"))?;
    let (ours, theirs) =
        UnixStream::pair().map_err(|e| format!("cannot create a local socket pair: {e}"))?;
    ours.set_nonblocking(true)
        .map_err(|e| format!("cannot make the local socket non-blocking: {e}"))?;
    std::thread::Builder::new()
        .name(format!("jump-{host}"))
        .spawn(move || pump(bastion, tcp, channel, ours))
        .map_err(|e| format!("cannot start the jump host's thread: {e}"))?;
    Ok(theirs)
}

/// Moves bytes between the channel and the local socket until either side ends. The session is
/// non-blocking and this one thread is its only user, so nothing waits on a lock.
fn pump(
    bastion: Connection,
    tcp: std::net::TcpStream,
    mut channel: Channel,
    mut local: UnixStream,
) {
    let session = &bastion.0;
    session.set_blocking(false);
    let mut to_local: Vec<u8> = Vec::new();
    let mut to_channel: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut local_closed = false;
    loop {
        let mut progress = false;
        // Channel to local socket.
        if to_local.is_empty() {
            match channel.read(&mut buf) {
                Ok(0) if channel.eof() => break,
                Ok(0) => {}
                Ok(n) => {
                    to_local.extend_from_slice(&buf[..n]);
                    progress = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
        }
        if !to_local.is_empty() {
            match local.write(&to_local) {
                Ok(n) => {
                    to_local.drain(..n);
                    progress = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
        }
        // Local socket to channel.
        if to_channel.is_empty() && !local_closed {
            match local.read(&mut buf) {
                Ok(0) => local_closed = true,
                Ok(n) => {
                    to_channel.extend_from_slice(&buf[..n]);
                    progress = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
        }
        if !to_channel.is_empty() {
            match channel.write(&to_channel) {
                Ok(n) => {
                    to_channel.drain(..n);
                    progress = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
        }
        // The host's session is gone (its goodbye already forwarded): nothing more to carry.
        if local_closed && to_channel.is_empty() {
            break;
        }
        if progress {
            continue;
        }
        let mut local_events = PollFlags::empty();
        if !local_closed && to_channel.is_empty() {
            local_events |= PollFlags::POLLIN;
        }
        if !to_local.is_empty() {
            local_events |= PollFlags::POLLOUT;
        }
        // libssh2 says which way it is stuck; reading is always of interest (the host may
        // send at any time).
        let mut tcp_events = PollFlags::POLLIN;
        if matches!(
            session.block_directions(),
            BlockDirections::Outbound | BlockDirections::Both
        ) {
            tcp_events |= PollFlags::POLLOUT;
        }
        let mut fds = [
            PollFd::new(local.as_fd(), local_events),
            PollFd::new(tcp.as_fd(), tcp_events),
        ];
        // A bounded wait: libssh2 may hold decrypted data that no socket event announces.
        if poll(&mut fds, PollTimeout::from(200u16)).is_err() {
            break;
        }
        let broken = PollFlags::POLLERR | PollFlags::POLLNVAL;
        if fds
            .iter()
            .any(|f| f.revents().is_some_and(|r| r.intersects(broken)))
        {
            break;
        }
    }
    // Closing our end tells the host's session the connection is gone (it reconnects if it
    // still needs one); the bastion gets a goodbye when its connection drops.
    drop(local);
    session.set_blocking(true);
    session.set_timeout(2000);
    let _ = channel.close();
    drop(channel);
    drop(bastion);
}
