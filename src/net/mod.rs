//! Bytes on the wire: framing by header, the few messages pgpilot writes itself, TLS, and the
//! client stream type that hides whether TLS is in use.

pub mod budget;
pub mod client_io;
pub mod frame;
pub mod messages;
pub mod stream;
pub mod tls;
