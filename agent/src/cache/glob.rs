//! Keys and `MATCH` patterns under a policy's key prefix. Glob characters in the prefix
//! (and in a rule's literal `prefix`) are escaped, so `MATCH` can only ever select keys
//! that start with the key prefix.

/// Characters with a meaning in Redis glob patterns.
const GLOB_SPECIAL: [char; 5] = ['*', '?', '[', ']', '\\'];

/// The longest pattern a rule may have.
pub const MAX_PATTERN_LEN: usize = 256;

/// The sub-prefix the agent keeps its own bookkeeping under; rules never delete it.
pub const RESERVED: &str = "biometrics:";

/// `s` with every glob character escaped: matches exactly `s`.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if GLOB_SPECIAL.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Why a rule or prefix is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RuleError(pub String);

/// Checks a key prefix.
pub fn check_prefix(key_prefix: &str) -> Result<(), RuleError> {
    if key_prefix.is_empty() {
        return Err(RuleError("keyPrefix must not be empty: a policy without a prefix could reach every key".into()));
    }
    if key_prefix.len() > MAX_PATTERN_LEN {
        return Err(RuleError(format!("keyPrefix is longer than {MAX_PATTERN_LEN} bytes")));
    }
    Ok(())
}

/// `MATCH` for a glob rule: the escaped prefix, then the rule's pattern.
pub fn pattern_match(key_prefix: &str, pattern: &str) -> Result<String, RuleError> {
    if pattern.is_empty() || pattern.len() > MAX_PATTERN_LEN {
        return Err(RuleError(format!("pattern must be 1 to {MAX_PATTERN_LEN} bytes")));
    }
    Ok(format!("{}{pattern}", escape(key_prefix)))
}

/// `MATCH` for a literal prefix rule.
pub fn prefix_match(key_prefix: &str, prefix: &str) -> Result<String, RuleError> {
    if prefix.is_empty() || prefix.len() > MAX_PATTERN_LEN {
        return Err(RuleError(format!("prefix must be 1 to {MAX_PATTERN_LEN} bytes")));
    }
    Ok(format!("{}*", escape(&format!("{key_prefix}{prefix}"))))
}

/// `MATCH` for every key of the policy.
pub fn all_match(key_prefix: &str) -> String {
    format!("{}*", escape(key_prefix))
}

/// Whether a key may be touched by the policy: under its prefix, not its bookkeeping.
pub fn owned(key_prefix: &str, key: &[u8]) -> bool {
    key.starts_with(key_prefix.as_bytes()) && !key[key_prefix.len()..].starts_with(RESERVED.as_bytes())
}

/// The set holding a tag's keys.
pub fn tag_set(key_prefix: &str, tag: &str) -> String {
    format!("{key_prefix}tag:{tag}")
}

/// The idempotency marker of an invalidation.
pub fn done_marker(key_prefix: &str, id: &str) -> String {
    format!("{key_prefix}{RESERVED}done:{id}")
}

/// A minimal Redis glob matcher, to check in tests that an escaped pattern means what we
/// think (Redis's `stringmatchlen` semantics for `*`, `?`, `[...]` and `\`).
pub fn glob_matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let (mut star_p, mut star_t) = (usize::MAX, 0);
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star_p = p;
                    star_t = t;
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    let mut q = p + 1;
                    let negate = q < pattern.len() && pattern[q] == b'^';
                    if negate {
                        q += 1;
                    }
                    let mut matched = false;
                    while q < pattern.len() && pattern[q] != b']' {
                        if pattern[q] == b'\\' && q + 1 < pattern.len() {
                            q += 1;
                            matched |= pattern[q] == text[t];
                        } else if q + 2 < pattern.len() && pattern[q + 1] == b'-' {
                            matched |= (pattern[q]..=pattern[q + 2]).contains(&text[t]);
                            q += 2;
                        } else {
                            matched |= pattern[q] == text[t];
                        }
                        q += 1;
                    }
                    if matched != negate {
                        p = q + 1;
                        t += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() && pattern[p + 1] == text[t] => {
                    p += 2;
                    t += 1;
                    continue;
                }
                // An escaped character that differs: no match here.
                b'\\' if p + 1 < pattern.len() => {}
                c if c == text[t] => {
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
        }
        if star_p == usize::MAX {
            return false;
        }
        p = star_p + 1;
        star_t += 1;
        t = star_t;
    }
    while p < pattern.len() && pattern[p] == b'*' {
        p += 1;
    }
    p == pattern.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_prefixes_match_only_themselves() {
        let prefix = "app[1]*:";
        let m = all_match(prefix);
        assert_eq!(m, "app\\[1\\]\\*:*");
        assert!(glob_matches(m.as_bytes(), b"app[1]*:user:1"));
        assert!(!glob_matches(m.as_bytes(), b"app1x:user:1"), "the brackets are literal");
        assert!(!glob_matches(m.as_bytes(), b"other:app[1]*:x"));
    }

    #[test]
    fn rules_stay_under_the_prefix() {
        let p = pattern_match("users:", "session:*").unwrap();
        assert!(glob_matches(p.as_bytes(), b"users:session:42"));
        assert!(!glob_matches(p.as_bytes(), b"orders:session:42"));
        let p = prefix_match("users:", "a*b").unwrap();
        assert!(glob_matches(p.as_bytes(), b"users:a*b:1"));
        assert!(!glob_matches(p.as_bytes(), b"users:axxb:1"), "a literal prefix is not a glob");
        assert!(pattern_match("users:", &"x".repeat(257)).is_err());
        assert!(prefix_match("users:", "").is_err());
        assert!(check_prefix("").is_err());
    }

    #[test]
    fn bookkeeping_is_never_owned_by_a_rule() {
        assert!(owned("users:", b"users:1"));
        assert!(!owned("users:", b"users:biometrics:done:x"));
        assert!(!owned("users:", b"orders:1"));
        assert_eq!(done_marker("users:", "abc"), "users:biometrics:done:abc");
    }
}
