//! Handing the listening sockets from the agent's namespace to the
//! supervisor over a Unix socket (`SCM_RIGHTS`), with rustix's safe
//! wrappers. The supervisor cannot enter the namespace without privileges,
//! but it can own sockets created there.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};

/// How many descriptors travel: explicit, transparent, DNS UDP, DNS TCP,
/// and a sock_diag socket (process lookups in the namespace).
pub const COUNT: usize = 5;

/// Sends `fds` with a one-byte payload.
pub fn send(sock: &UnixStream, fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(COUNT))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(std::io::Error::other("too many descriptors"));
    }
    rustix::net::sendmsg(sock.as_fd(), &[IoSlice::new(b"F")], &mut control, SendFlags::empty())?;
    Ok(())
}

/// Receives exactly [`COUNT`] descriptors.
pub fn recv(sock: &UnixStream) -> std::io::Result<Vec<OwnedFd>> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(COUNT))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    let got = rustix::net::recvmsg(
        sock.as_fd(),
        &mut [IoSliceMut::new(&mut byte)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    if got.bytes == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "namespace helper exited",
        ));
    }
    let mut fds = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = msg {
            fds.extend(rights);
        }
    }
    if fds.len() != COUNT {
        return Err(std::io::Error::other(format!(
            "expected {COUNT} descriptors, got {}",
            fds.len()
        )));
    }
    Ok(fds)
}
