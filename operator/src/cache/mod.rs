//! The CachePolicy controller.

pub mod decide;
pub mod reconcile;
