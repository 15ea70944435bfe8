//! A Kubernetes API server for tests and the local demo: in memory, one process, on
//! loopback. This crate grows into the whole server; today it holds the part every test
//! of our custom resources needs first — admitting an object against a CRD's schema.

pub mod schema;
