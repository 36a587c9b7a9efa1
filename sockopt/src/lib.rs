//! `TCP_DEFER_ACCEPT` for the sidecar's client listener.
//!
//! With it set, Linux does not put a new connection in the listener's accept queue when the
//! handshake completes, but when the client's first bytes arrive (or, for a client that sends
//! nothing, once the given seconds have passed and the server's handshake reply has been sent
//! again). A PostgreSQL client always speaks first (its start-up packet or SSL request), so
//! the pooler is woken once per login, with the packet already there, instead of once for the
//! handshake and again for the packet. PgBouncer sets it on Linux by default
//! (`tcp_defer_accept`).
//!
//! std's `TcpStreamExt::set_deferaccept` is unstable (rust-lang/rust#119639), and neither
//! socket2 nor rustix sets it; this crate holds the one `setsockopt` (and the `getsockopt` that
//! reads it back) so that every other crate of the workspace can keep forbidding `unsafe`.

use std::io;
use std::os::fd::AsFd;

/// Set `TCP_DEFER_ACCEPT` on a listening TCP socket: accept a connection only once data has
/// arrived on it, waiting at most about `seconds` (the kernel rounds it up to its handshake
/// retransmission schedule: 1, 3, 7, 15, 31 … seconds). `0` turns it off.
///
/// Fails with [`io::ErrorKind::Unsupported`] on systems other than Linux.
pub fn set_tcp_defer_accept(socket: &impl AsFd, seconds: u32) -> io::Result<()> {
    imp::set(socket, seconds)
}

/// The socket's `TCP_DEFER_ACCEPT`, in seconds as the kernel rounded it (`0`: off).
pub fn tcp_defer_accept(socket: &impl AsFd) -> io::Result<u32> {
    imp::get(socket)
}

#[cfg(target_os = "linux")]
mod imp {
    use std::io;
    use std::os::fd::{AsFd, AsRawFd};

    const LEN: libc::socklen_t = std::mem::size_of::<libc::c_int>() as libc::socklen_t;

    pub(super) fn set(socket: &impl AsFd, seconds: u32) -> io::Result<()> {
        let value = libc::c_int::try_from(seconds)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "seconds out of range"))?;
        let fd = socket.as_fd().as_raw_fd();
        // SAFETY: `fd` is borrowed from a live `AsFd` for the whole call; the option value
        // points to a `c_int` on this stack frame and `LEN` is its size, which is what the
        // kernel reads for TCP_DEFER_ACCEPT. The call keeps no pointer.
        #[allow(unsafe_code)]
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                (&raw const value).cast(),
                LEN,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    pub(super) fn get(socket: &impl AsFd) -> io::Result<u32> {
        let mut value: libc::c_int = 0;
        let mut len = LEN;
        let fd = socket.as_fd().as_raw_fd();
        // SAFETY: as in `set`; the kernel writes at most `len` bytes into `value` and stores
        // the length it wrote in `len`, both on this stack frame.
        #[allow(unsafe_code)]
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                (&raw mut value).cast(),
                &raw mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        if len != LEN {
            return Err(io::Error::other(
                "TCP_DEFER_ACCEPT: unexpected option length",
            ));
        }
        u32::try_from(value).map_err(|_| io::Error::other("TCP_DEFER_ACCEPT: negative value"))
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::io;
    use std::os::fd::AsFd;

    fn unsupported() -> io::Error {
        io::Error::new(io::ErrorKind::Unsupported, "TCP_DEFER_ACCEPT is Linux only")
    }

    pub(super) fn set(_socket: &impl AsFd, _seconds: u32) -> io::Result<()> {
        Err(unsupported())
    }

    pub(super) fn get(_socket: &impl AsFd) -> io::Result<u32> {
        Err(unsupported())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::io::{ErrorKind, Read, Write};
    use std::net::{TcpListener, TcpStream};

    use super::*;

    #[test]
    fn reads_back_as_the_kernel_rounds_it() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(tcp_defer_accept(&l).unwrap(), 0);
        for (set, read) in [(1, 1), (2, 3), (30, 31), (0, 0)] {
            set_tcp_defer_accept(&l, set).unwrap();
            assert_eq!(tcp_defer_accept(&l).unwrap(), read, "set {set}");
        }
    }

    #[test]
    fn out_of_range_is_refused_and_changes_nothing() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let e = set_tcp_defer_accept(&l, u32::MAX).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert_eq!(tcp_defer_accept(&l).unwrap(), 0);
    }

    #[test]
    fn not_a_tcp_socket_is_an_error() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(set_tcp_defer_accept(&a, 1).is_err());
        assert!(tcp_defer_accept(&a).is_err());
    }

    /// The connection reaches the accept queue with its first bytes, not with the handshake.
    /// (A long defer, so that no stall of the machine can let the kernel's timeout accept it.)
    #[test]
    fn a_connection_is_accepted_once_its_first_bytes_arrive() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        set_tcp_defer_accept(&l, 30).unwrap();
        l.set_nonblocking(true).unwrap();
        let mut c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        match l.accept() {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            other => panic!("accepted before any bytes arrived: {other:?}"),
        }
        c.write_all(b"hello").unwrap();
        l.set_nonblocking(false).unwrap();
        let (mut s, _) = l.accept().unwrap();
        let mut got = [0u8; 5];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
    }
}
