//! Client authentication: verifying clients (`client`: SCRAM-SHA-256, md5, trust) with the
//! secret formats of `config::secrets`. Logging in to servers is the backend's (`backend::login`).

pub mod client;
