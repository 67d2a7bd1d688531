//! The client listeners: the TCP socket's options, and the Unix-domain socket beside it.

use std::path::{Path, PathBuf};

use tokio::net::{TcpListener, UnixListener};

/// TCP_DEFER_ACCEPT: the kernel hands a connection to `accept` only once its first bytes (the
/// startup packet or SSLRequest) have arrived, so accepting and reading them take one wake-up
/// instead of two, and a peer that connects and sends nothing holds no session (PgBouncer's
/// `tcp_defer_accept`, on by default on Linux). After about `secs` (Linux rounds up to its
/// SYN-ACK retransmissions: 45 becomes ~63 s) a still-silent connection is handed over anyway
/// and `startup_timeout_ms` applies from there; 0 leaves the option off.
pub fn defer_accept(listener: &TcpListener, secs: u64) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    if secs > 0 {
        use std::os::fd::AsRawFd;
        let value = libc::c_int::try_from(secs).unwrap_or(libc::c_int::MAX);
        // SAFETY: a valid, open socket descriptor (borrowed from the listener for the call) and a
        // pointer to a c_int that lives through it, with its exact size.
        let rc = unsafe {
            libc::setsockopt(
                listener.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                std::ptr::from_ref(&value).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (listener, secs);
    Ok(())
}

/// The Unix-domain socket clients on this machine may use (`server.unix_socket_dir`), named as
/// libpq looks for it; the file goes when this is dropped (the accept loop's end), unless another
/// process has bound the name since.
pub struct UnixSocket {
    pub listener: UnixListener,
    path: PathBuf,
    inode: u64,
}

impl UnixSocket {
    /// Binds `.s.PGSQL.<port>` in `dir`. A socket there that refuses connections (left by a
    /// process killed before it could remove it) is replaced; one
    /// that answers, one this user may not reach, or a file that is no socket is an error, as in
    /// PgBouncer: its owner may be a PostgreSQL or a PgBouncer on the same port.
    pub fn bind(dir: &str, port: u16) -> std::io::Result<UnixSocket> {
        use std::io::{Error, ErrorKind};
        use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
        let path = Path::new(dir).join(format!(".s.PGSQL.{port}"));
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            if !meta.file_type().is_socket() {
                return Err(Error::new(ErrorKind::AlreadyExists, format!("{} is not a socket", path.display())));
            }
            match answers(&path) {
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => std::fs::remove_file(&path)?,
                Ok(()) => return Err(Error::new(ErrorKind::AddrInUse, format!("{} is in use", path.display()))),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    return Err(Error::new(ErrorKind::AddrInUse, format!("{} is in use (busy)", path.display())))
                }
                Err(e) => return Err(Error::new(e.kind(), format!("{}: {e}", path.display()))),
            }
        }
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))?;
        let inode = std::fs::metadata(&path)?.ino();
        Ok(UnixSocket { listener, path, inode })
    }
}

/// A non-blocking connect, so a live owner with a full backlog (WouldBlock) cannot hang the start.
fn answers(path: &Path) -> std::io::Result<()> {
    let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.connect(&socket2::SockAddr::unix(path)?)
}

impl Drop for UnixSocket {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        if std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Bound, refused while it answers, its file gone when dropped, and a stale file replaced.
    #[tokio::test]
    async fn the_unix_socket_takes_only_a_silent_name() {
        let dir = std::env::temp_dir().join(format!("pgpilot-sock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.to_str().unwrap();
        let path = dir.join(".s.PGSQL.7");
        let first = UnixSocket::bind(d, 7).unwrap();
        assert!(path.exists());
        let refused = UnixSocket::bind(d, 7).err().expect("a live socket is not taken over");
        assert_eq!(refused.kind(), std::io::ErrorKind::AddrInUse);
        let file = dir.join(".s.PGSQL.8");
        std::fs::write(&file, b"not a socket").unwrap();
        assert!(UnixSocket::bind(d, 8).is_err(), "a regular file is left alone");
        assert!(file.exists());
        drop(first);
        assert!(!path.exists(), "removed with its listener");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap()); // a file nobody answers on
        assert!(path.exists());
        let second = UnixSocket::bind(d, 7).unwrap();
        tokio::net::UnixStream::connect(&path).await.expect("the new socket answers");
        drop(second);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The kernel reads the option back (rounded to its retransmission steps): set, and off at 0.
    #[tokio::test]
    async fn the_option_is_set_on_the_listener() {
        use std::os::fd::AsRawFd;
        let read = |l: &TcpListener| {
            let (mut v, mut len) = (0 as libc::c_int, std::mem::size_of::<libc::c_int>() as libc::socklen_t);
            // SAFETY: as above; `len` holds the buffer's size and the kernel writes at most that.
            let rc = unsafe {
                libc::getsockopt(
                    l.as_raw_fd(),
                    libc::IPPROTO_TCP,
                    libc::TCP_DEFER_ACCEPT,
                    std::ptr::from_mut(&mut v).cast(),
                    &mut len,
                )
            };
            assert_eq!(rc, 0);
            v
        };
        let on = TcpListener::bind("127.0.0.1:0").await.unwrap();
        defer_accept(&on, 45).unwrap();
        assert!(read(&on) >= 45, "{}", read(&on));
        let off = TcpListener::bind("127.0.0.1:0").await.unwrap();
        defer_accept(&off, 0).unwrap();
        assert_eq!(read(&off), 0);
    }
}
