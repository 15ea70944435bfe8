//! The agent's HTTP API (v1): its routes and error codes, the JSON wire types, and the short-lived EdDSA tokens the
//! operator mints and the agent verifies. A crate of its own so the operator's agent client
//! shares them without linking the agent's Redis and pprof machinery.

pub mod auth;
pub mod routes;
mod wire;

pub use routes::{ErrorBody, ErrorCode};
pub use wire::*;
