//! Bytes on the wire: framing by header, the few messages pgpilot writes itself, TLS both ways,
//! the stream types that hide whether TLS is in use, and where a server listens (TCP or a
//! Unix-domain socket).

pub mod budget;
pub mod client_io;
pub mod endpoint;
pub mod frame;
pub mod listen;
pub mod messages;
pub mod stream;
pub mod tls;
pub mod upstream_tls;
