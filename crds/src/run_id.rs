//! Run ids: what ties a run, and its files on the volume, to one ProfileCapture object.
//!
//! Every run id ends with `-` and the first 8 hex digits of its capture's uid (`g1-3f2a9c1b`,
//! `s1767225600-3f2a9c1b`), so a capture deleted and created again under the same name
//! writes under other directories than the old one's, and retention, deletion and the
//! browser can tell the two apart by name alone.

/// How many hex digits of the uid a run id carries.
pub const SUFFIX_DIGITS: usize = 8;

/// The suffix of a capture's run ids: the first 8 hex digits of its uid, lower case (fewer
/// when the uid has fewer; empty for none).
pub fn suffix(uid: &str) -> String {
    uid.chars().filter(char::is_ascii_hexdigit).take(SUFFIX_DIGITS).map(|c| c.to_ascii_lowercase()).collect()
}

/// The run id `base` (`g1`, `s1767225600`, …) of the capture with `uid`.
pub fn run_id(base: &str, uid: &str) -> String {
    match suffix(uid) {
        s if s.is_empty() => base.to_owned(),
        s => format!("{base}-{s}"),
    }
}

/// Whether `suffix` has the form of a run-id suffix: 8 lower-case hex digits.
pub fn is_suffix(suffix: &str) -> bool {
    suffix.len() == SUFFIX_DIGITS && suffix.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether run `run` belongs to the capture whose run ids end with `suffix`.
pub fn belongs(run: &str, suffix: &str) -> bool {
    run.strip_suffix(suffix).is_some_and(|base| base.len() > 1 && base.ends_with('-'))
}

/// The suffix of run `run`, when it has one (runs written before run ids carried it have
/// none).
pub fn suffix_of(run: &str) -> Option<&str> {
    let (base, suffix) = run.rsplit_once('-')?;
    (!base.is_empty() && is_suffix(suffix)).then_some(suffix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_end_with_the_uid_s_first_eight_hex_digits() {
        let uid = "3F2A9C1B-7d4e-4b1a-9c3e-000000000001";
        assert_eq!(suffix(uid), "3f2a9c1b");
        assert_eq!(run_id("g1", uid), "g1-3f2a9c1b");
        assert_eq!(run_id("s1767225600", uid), "s1767225600-3f2a9c1b");
        assert!(belongs("g1-3f2a9c1b", "3f2a9c1b"));
        assert!(!belongs("g1-3f2a9c1c", "3f2a9c1b"), "another capture of the same name");
        assert!(!belongs("3f2a9c1b", "3f2a9c1b") && !belongs("-3f2a9c1b", "3f2a9c1b"));
        assert!(!belongs("g13f2a9c1b", "3f2a9c1b"));
        assert_eq!(suffix_of("m0a1b2c3d4e5f-3f2a9c1b"), Some("3f2a9c1b"));
        assert_eq!(suffix_of("g1"), None, "a run from before the suffix");
        assert_eq!(suffix_of("run-1"), None);
        assert!(is_suffix("0123abcd") && !is_suffix("0123ABCD") && !is_suffix("0123abc") && !is_suffix("0123abcg"));
        assert_eq!(run_id("g1", ""), "g1");
    }
}
