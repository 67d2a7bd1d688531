//! Bytes on the wire: framing by header, the few messages pgpilot writes itself, TLS both ways,
//! and the stream types that hide whether TLS is in use.

pub mod budget;
pub mod client_io;
pub mod frame;
pub mod listen;
pub mod messages;
pub mod stream;
pub mod tls;
pub mod upstream_tls;
