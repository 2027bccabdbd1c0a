//! The embedded TURN server: the actors in [`server`], the pure protocol and policy code in
//! [`core`] (framing, messages, authentication, allocations, the relay policy).

pub mod core;
pub mod server;

pub use server::*;
