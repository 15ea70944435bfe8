//! The in-memory summariser this module had before it streamed (prost-decoded
//! `proto::Profile`, whole): kept for tests only, as the oracle that the streaming one is
//! compared with on generated profiles.

use std::collections::HashMap;

use super::{ProfileError, Summary, TopEntry, proto};

use super::NODE_FRACTION;

fn string(p: &proto::Profile, index: i64) -> &str {
    usize::try_from(index).ok().and_then(|i| p.string_table.get(i)).map_or("", String::as_str)
}

/// The sample index pprof shows by default: `default_sample_type`, else the last.
fn default_index(p: &proto::Profile) -> Result<usize, ProfileError> {
    if p.sample_type.is_empty() {
        return Err(ProfileError::NoSampleTypes);
    }
    let wanted = string(p, p.default_sample_type);
    let by_name = (p.default_sample_type != 0)
        .then(|| p.sample_type.iter().position(|t| string(p, t.r#type) == wanted))
        .flatten();
    Ok(by_name.unwrap_or(p.sample_type.len() - 1))
}

/// The frames of every location as dense function keys, so that aggregation is array
/// indexing rather than hashing: built once per profile.
struct FrameIndex<'a> {
    /// Function key → printable name (same-named functions share a key, as in pprof).
    names: Vec<std::borrow::Cow<'a, str>>,
    /// Location id → range in `frames` (leaf first, inlined frames expanded).
    by_location: HashMap<u64, (u32, u32)>,
    frames: Vec<u32>,
}

impl<'a> FrameIndex<'a> {
    fn new(p: &'a proto::Profile) -> Self {
        let mut key_of_name: HashMap<&'a str, u32> = HashMap::new();
        let mut names: Vec<std::borrow::Cow<'a, str>> = Vec::new();
        let mut intern = |name: std::borrow::Cow<'a, str>, names: &mut Vec<std::borrow::Cow<'a, str>>| -> u32 {
            if let std::borrow::Cow::Borrowed(b) = name
                && let Some(k) = key_of_name.get(b)
            {
                return *k;
            }
            let key = names.len() as u32;
            if let std::borrow::Cow::Borrowed(b) = name {
                key_of_name.insert(b, key);
            }
            names.push(name);
            key
        };
        let function_key: HashMap<u64, u32> = p
            .function
            .iter()
            .map(|f| (f.id, intern(std::borrow::Cow::Borrowed(string(p, f.name)), &mut names)))
            .collect();
        let mut frames = Vec::new();
        let mut by_location = HashMap::with_capacity(p.location.len());
        for loc in &p.location {
            let start = frames.len() as u32;
            if loc.line.is_empty() {
                // Unsymbolised: pprof shows the address.
                frames.push(intern(std::borrow::Cow::Owned(format!("{:#x}", loc.address)), &mut names));
            } else {
                for line in &loc.line {
                    let key = match function_key.get(&line.function_id) {
                        Some(k) => *k,
                        None => intern(std::borrow::Cow::Borrowed("?"), &mut names),
                    };
                    frames.push(key);
                }
            }
            by_location.insert(loc.id, (start, frames.len() as u32));
        }
        Self { names, by_location, frames }
    }

    /// The frames of a location, leaf first; unknown locations are one `?` frame.
    fn frames(&self, location: u64) -> &[u32] {
        match self.by_location.get(&location) {
            Some((a, b)) => &self.frames[*a as usize..*b as usize],
            None => &[],
        }
    }
}

/// Summarises a profile as `go tool pprof -top` does, keeping the top `n` functions.
pub fn summarise(p: &proto::Profile, n: usize) -> Result<Summary, ProfileError> {
    let index = default_index(p)?;
    let sample_type = p.sample_type[index];
    let frames = FrameIndex::new(p);
    let count = frames.names.len();
    let (mut flat, mut cum) = (vec![0i64; count], vec![0i64; count]);
    // The last sample that counted a function's cum: recursion counts once per sample.
    let mut stamp = vec![u32::MAX; count];
    let mut total: i64 = 0;
    for (sample_no, sample) in p.sample.iter().enumerate() {
        let value = sample.value.get(index).copied().unwrap_or(0);
        total += value.abs();
        if value == 0 {
            continue;
        }
        let sample_no = sample_no as u32;
        let mut leaf = true;
        for &loc in &sample.location_id {
            for &key in frames.frames(loc) {
                let k = key as usize;
                if leaf {
                    flat[k] += value;
                    leaf = false;
                }
                if stamp[k] != sample_no {
                    stamp[k] = sample_no;
                    cum[k] += value;
                }
            }
        }
    }
    // pprof's node cutoff: a fraction of the nodes' flat sum, truncated; kept at or above.
    let flat_sum: i64 = flat.iter().sum();
    let cutoff = ((flat_sum as f64 * NODE_FRACTION) as i64).abs();
    let percent = |v: i64| if total == 0 { 0.0 } else { v as f64 * 100.0 / total as f64 };
    let mut order: Vec<usize> =
        (0..count).filter(|k| (flat[*k] != 0 || cum[*k] != 0) && (cutoff == 0 || cum[*k].abs() >= cutoff)).collect();
    order.sort_by(|a, b| {
        flat[*b]
            .abs()
            .cmp(&flat[*a].abs())
            .then_with(|| frames.names[*a].cmp(&frames.names[*b]))
            .then_with(|| cum[*b].abs().cmp(&cum[*a].abs()))
    });
    order.truncate(n);
    let functions = order
        .into_iter()
        .map(|k| TopEntry {
            function: frames.names[k].to_string(),
            flat: flat[k],
            flat_percent: percent(flat[k]),
            cum: cum[k],
            cum_percent: percent(cum[k]),
        })
        .collect();
    Ok(Summary {
        sample_type: format!("{}/{}", string(p, sample_type.r#type), string(p, sample_type.unit)),
        total,
        samples: p.sample.len() as u64,
        functions,
    })
}

/// Folded stacks (`root;…;leaf value`) of the default sample type, for a flame graph.
pub fn folded_stacks(p: &proto::Profile) -> Result<Vec<String>, ProfileError> {
    let index = default_index(p)?;
    let frames = FrameIndex::new(p);
    let mut stacks: HashMap<Vec<u32>, i64> = HashMap::new();
    let mut stack = Vec::new();
    for sample in &p.sample {
        let value = sample.value.get(index).copied().unwrap_or(0);
        if value <= 0 {
            continue;
        }
        stack.clear();
        for &loc in &sample.location_id {
            stack.extend_from_slice(frames.frames(loc));
        }
        stack.reverse();
        *stacks.entry(stack.clone()).or_default() += value;
    }
    let mut lines: Vec<String> = stacks
        .into_iter()
        .map(|(keys, v)| {
            let names: Vec<String> = keys.iter().map(|k| frames.names[*k as usize].replace(';', ":")).collect();
            format!("{} {v}", names.join(";"))
        })
        .collect();
    lines.sort();
    Ok(lines)
}
