//! The agent's HTTP API (v1): the JSON wire types, and the short-lived EdDSA tokens the
//! operator mints and the agent verifies. A crate of its own so the operator's agent client
//! shares them without linking the agent's Redis and pprof machinery.

pub mod auth;
mod wire;

pub use wire::*;
