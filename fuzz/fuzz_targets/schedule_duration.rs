//! Any text as a schedule or a duration: parsed or refused, and a parsed schedule's fire
//! times can be asked for without a panic or an endless loop.
#![no_main]

use biometrics_crds::{duration::Duration, schedule::Schedule};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(d) = text.parse::<Duration>() {
        let _ = d.as_std();
        // What was parsed prints back to something that parses to the same value.
        let again: Duration = d.to_string().parse().expect("a printed duration parses");
        assert_eq!(again, d);
    }
    if let Ok(s) = text.parse::<Schedule>() {
        let start: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().expect("timestamp");
        if let Some(next) = s.next_after(start) {
            assert!(next > start, "the next fire time is after the start");
        }
        let until: jiff::Timestamp = "2026-01-03T00:00:00Z".parse().expect("timestamp");
        let missed = s.missed_between(start, until, 100);
        assert!(missed.count <= 100);
    }
});
