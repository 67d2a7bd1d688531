//! Authentication on both sides of the proxy: verifying clients (`client`) and logging in to
//! servers (`server`), with the secret formats they share (`secrets`).

pub mod client;
pub mod secrets;
pub mod server;
