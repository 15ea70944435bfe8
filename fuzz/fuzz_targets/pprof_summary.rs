//! Any bytes as a pprof profile (gzip or not): the streaming analysis (the top functions,
//! the folded stacks, the rendered table and flame graph) either works or fails with an
//! error, never a panic, and never charges more memory than its allowance, however far
//! the bytes inflate (the seeds include gzip bombs: zeros, and a valid profile with a
//! 16 MiB string).
#![no_main]

use biometrics_agent::profile::{self, memory::Allowance};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let options = profile::Options { max_decompressed_bytes: 1 << 20, top_n: 10, flame: true, mergeable: false };
    let granted = 4 << 20;
    let mut memory = Allowance::new(granted, None);
    if let Ok(analysis) = profile::analyse(std::io::Cursor::new(data), &options, &mut memory) {
        let _ = profile::render_top(&analysis.summary);
        if let Some(folded) = &analysis.folded {
            let _ = profile::flamegraph::render_svg("fuzz", "count", folded, std::io::sink());
        }
    }
    assert!(memory.peak() <= granted, "charged {} of {granted}", memory.peak());
});
