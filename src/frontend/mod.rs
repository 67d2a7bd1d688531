//! The client side: the opening exchange (`startup`), authentication, and the session loop that
//! relays messages between the client and whichever server connection it holds.

pub mod session;
pub mod session_state;
pub mod sql_scan;
pub mod startup;
pub mod tx;

mod begin;
mod client_bytes;
mod flush;
mod forward;
mod hold;
mod keeping;
mod known_texts;
mod lexing;
mod login;
mod relay;
mod reply_actions;
mod reply_attachment;
mod reply_events;
mod reply_queue;
mod reported;
mod session_effects;
mod stages;
mod statement_updates;
mod statement_versions;
mod statements;
mod waits;
