//! The client listener's socket options.

use tokio::net::TcpListener;

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

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

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
