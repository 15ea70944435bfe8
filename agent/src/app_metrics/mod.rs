//! The app's own request metrics, read from its Prometheus endpoint: request rate, error
//! ratio and latency quantiles over a window, the signals people page on.
//!
//! `exposition` reads the text format strictly, `reading` keeps the series the signals
//! need from one scrape, `window` turns successive readings into figures. All three are
//! pure; the scraping lives with the runtime sampler.

pub mod exposition;
pub mod reading;
pub mod window;
