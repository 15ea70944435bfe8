//! Any bytes as a pprof profile (gzip or not): decoding, the top functions, folded stacks
//! and the rendered table either work or fail with an error, never a panic.
#![no_main]

use biometrics_agent::profile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = profile::decode(data, 1 << 20) else { return };
    if let Ok(summary) = profile::summarise(&p, 10) {
        let _ = profile::render_top(&summary);
    }
    let _ = profile::folded_stacks(&p);
});
