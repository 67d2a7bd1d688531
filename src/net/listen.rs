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
    /// Binds `.s.PGSQL.<port>` in `dir`. A file there that nobody answers on (left by a process
    /// that died, or by a pgpilot draining after its listeners closed) is replaced; one that
    /// answers is an error, as in PgBouncer: its owner may be a PostgreSQL on the same port.
    pub fn bind(dir: &str, port: u16) -> std::io::Result<UnixSocket> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let path = Path::new(dir).join(format!(".s.PGSQL.{port}"));
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            let msg = format!("{} is in use by another process", path.display());
            return Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, msg));
        }
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))?;
        let inode = std::fs::metadata(&path)?.ino();
        Ok(UnixSocket { listener, path, inode })
    }
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
