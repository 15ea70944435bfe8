//! The capture argument, as kubectl would take it: `pcap/NAME`, `profilecapture/NAME` (and
//! the plural and group-qualified forms kubectl accepts) or a bare `NAME`.

use crate::error::{Error, Result};

/// The resource names kubectl resolves to ProfileCaptures.
const KINDS: [&str; 6] = [
    "pcap",
    "profilecapture",
    "profilecaptures",
    "profilecapture.biometrics.io",
    "profilecaptures.biometrics.io",
    "pcaps",
];

/// The capture's name from the argument. The name is checked as the API server checks it
/// (a DNS subdomain), so a typo fails here with the argument in the message rather than as a
/// 404 for a path that could never exist.
pub fn parse(given: &str) -> Result<String> {
    let bad = || Error::BadReference { given: given.to_owned() };
    let name = match given.split_once('/') {
        Some((kind, name)) if KINDS.contains(&kind.to_ascii_lowercase().as_str()) => name,
        Some(_) => return Err(bad()),
        None => given,
    };
    if is_dns_subdomain(name) { Ok(name.to_owned()) } else { Err(bad()) }
}

/// RFC 1123 subdomain: lowercase alphanumerics, `-` and `.`, alphanumeric at both ends of
/// each label, at most 253 characters.
fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_forms() {
        for given in ["checkout", "pcap/checkout", "PCAP/checkout", "profilecapture/checkout", "pcaps/checkout"] {
            assert_eq!(parse(given).unwrap(), "checkout", "{given}");
        }
        assert_eq!(parse("profilecaptures.biometrics.io/a.b-1").unwrap(), "a.b-1");
    }

    #[test]
    fn other_kinds_and_bad_names_are_refused() {
        for given in [
            "pod/checkout",
            "cpol/checkout",
            "pcap/",
            "",
            "pcap/Checkout",
            "pcap/a/b",
            "-a",
            "a..b",
            "a_b",
            &"a".repeat(254),
        ] {
            let e = parse(given).unwrap_err();
            assert!(matches!(&e, Error::BadReference { given: g } if g == given), "{given}: {e}");
        }
    }

    #[test]
    fn the_message_says_what_is_accepted() {
        let e = parse("deploy/web").unwrap_err().to_string();
        assert_eq!(e, "\"deploy/web\" is not a ProfileCapture: write pcap/NAME, profilecapture/NAME or NAME");
    }
}
