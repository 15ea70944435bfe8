//! Any bytes as the body of each agent API request: decoded and validated, or refused with
//! a reason — never a panic.
#![no_main]

use biometrics_agent::{
    api::{CaptureRequest, EnforceRequest, InvalidationRequest, RetentionRequest, StatsRequest},
    cache::CacheLimits,
    captures::Limits,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = serde_json::from_slice::<CaptureRequest>(data) {
        let _ = biometrics_agent::captures::validate(&r, &Limits::default());
    }
    if let Ok(r) = serde_json::from_slice::<InvalidationRequest>(data) {
        let _ = biometrics_agent::cache::invalidate::validate(&r, &CacheLimits::default());
    }
    if let Ok(r) = serde_json::from_slice::<EnforceRequest>(data) {
        let _ = biometrics_agent::cache::enforce::validate(&r);
    }
    if let Ok(r) = serde_json::from_slice::<StatsRequest>(data) {
        let _ = biometrics_agent::cache::glob::check_prefix(&r.key_prefix);
    }
    let _ = serde_json::from_slice::<RetentionRequest>(data);
});
