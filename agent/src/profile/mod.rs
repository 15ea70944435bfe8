//! Reading pprof profiles (gzip-compressed protobuf): the summary `go tool pprof -top`
//! prints — the default sample type, its total, and each function's flat and cumulative
//! value — and the folded stacks a flame graph is drawn from.

pub mod flamegraph;
pub mod proto;

use std::{collections::HashMap, io::Read};

use prost::Message;

use crate::api::TopEntry;

/// Why a file is not a usable profile.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// Not gzip, or a truncated gzip stream.
    #[error("not a gzip-compressed pprof profile: {0}")]
    Gzip(std::io::Error),
    /// Larger than allowed once decompressed.
    #[error("the profile decompresses to more than {limit} bytes (limit maxDecompressedBytes)")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The bytes are not a `profile.proto` message.
    #[error("not a pprof protobuf: {0}")]
    Decode(#[from] prost::DecodeError),
    /// A profile without sample types.
    #[error("the profile has no sample types")]
    NoSampleTypes,
}

/// Reads and decodes a gzip-compressed (or plain) profile, refusing to inflate past `limit`.
pub fn decode(reader: impl Read, limit: u64) -> Result<proto::Profile, ProfileError> {
    let mut head = Vec::new();
    let mut reader = reader;
    let mut first = [0u8; 2];
    let n = read_up_to(&mut reader, &mut first).map_err(ProfileError::Gzip)?;
    head.extend_from_slice(&first[..n]);
    let chained = std::io::Cursor::new(head).chain(reader);
    let mut raw = Vec::new();
    let read = if first[..n] == [0x1f, 0x8b] {
        flate2::read::MultiGzDecoder::new(chained).take(limit + 1).read_to_end(&mut raw)
    } else {
        chained.take(limit + 1).read_to_end(&mut raw)
    };
    read.map_err(ProfileError::Gzip)?;
    if raw.len() as u64 > limit {
        return Err(ProfileError::TooLarge { limit });
    }
    Ok(proto::Profile::decode(raw.as_slice())?)
}

fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// What `go tool pprof -top` reports about a profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// `type/unit` of the summarised sample type.
    pub sample_type: String,
    /// Sum of that value over all samples.
    pub total: i64,
    /// Number of samples.
    pub samples: u64,
    /// Functions by flat value (descending), then name, then cum — pprof's order —
    /// without the ones pprof drops as insignificant.
    pub functions: Vec<TopEntry>,
}

/// The fraction of the total under which pprof drops a node from its report.
const NODE_FRACTION: f64 = 0.005;

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
    let cutoff = (total as f64 * NODE_FRACTION).abs();
    let percent = |v: i64| if total == 0 { 0.0 } else { v as f64 * 100.0 / total as f64 };
    let mut order: Vec<usize> = (0..count).filter(|k| cum[*k] != 0 && cum[*k].abs() as f64 > cutoff).collect();
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

/// The summary as the table `biometrics-agent top` prints (the columns of `go tool pprof -top`,
/// in the profile's own unit).
pub fn render_top(s: &Summary) -> String {
    let mut out = format!("Type: {}\nTotal: {}  Samples: {}\n", s.sample_type, s.total, s.samples);
    out.push_str(&format!("{:>14} {:>7} {:>7} {:>14} {:>7}  {}\n", "flat", "flat%", "sum%", "cum", "cum%", "function"));
    let mut sum = 0.0;
    for t in &s.functions {
        sum += t.flat_percent;
        out.push_str(&format!(
            "{:>14} {:>6.2}% {:>6.2}% {:>14} {:>6.2}%  {}\n",
            t.flat, t.flat_percent, sum, t.cum, t.cum_percent, t.function
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// main -> work -> (inlined) hash; main -> idle. Values: cpu nanoseconds.
    fn profile() -> proto::Profile {
        let strings = ["", "samples", "count", "cpu", "nanoseconds", "main", "work", "hash", "idle"];
        let f = |id: u64, name: i64| proto::Function { id, name, ..Default::default() };
        let line = |function_id| proto::Line { function_id, ..Default::default() };
        let loc = |id: u64, lines: Vec<proto::Line>| proto::Location { id, line: lines, ..Default::default() };
        proto::Profile {
            sample_type: vec![proto::ValueType { r#type: 1, unit: 2 }, proto::ValueType { r#type: 3, unit: 4 }],
            function: vec![f(1, 5), f(2, 6), f(3, 7), f(4, 8)],
            // Location 10 is `hash` inlined into `work`.
            location: vec![
                loc(10, vec![line(3), line(2)]),
                loc(11, vec![line(1)]),
                loc(12, vec![line(4)]),
                loc(13, vec![line(2)]),
            ],
            sample: vec![
                proto::Sample { location_id: vec![10, 11], value: vec![6, 600], label: vec![] },
                proto::Sample { location_id: vec![13, 11], value: vec![1, 100], label: vec![] },
                proto::Sample { location_id: vec![12, 11], value: vec![3, 300], label: vec![] },
            ],
            string_table: strings.iter().map(|s| (*s).to_owned()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn flat_and_cum_like_pprof() {
        let s = summarise(&profile(), 10).unwrap();
        assert_eq!(s.sample_type, "cpu/nanoseconds", "the last sample type is the default");
        assert_eq!(s.total, 1000);
        assert_eq!(s.samples, 3);
        let rows: Vec<(&str, i64, i64)> = s.functions.iter().map(|t| (t.function.as_str(), t.flat, t.cum)).collect();
        assert_eq!(rows, [("hash", 600, 600), ("idle", 300, 300), ("work", 100, 700), ("main", 0, 1000)]);
        assert!((s.functions[0].flat_percent - 60.0).abs() < 1e-9);
        assert!((s.functions[3].cum_percent - 100.0).abs() < 1e-9);
    }

    #[test]
    fn default_sample_type_wins_over_last() {
        let mut p = profile();
        p.default_sample_type = 1;
        let s = summarise(&p, 2).unwrap();
        assert_eq!(s.sample_type, "samples/count");
        assert_eq!(s.total, 10);
        assert_eq!(s.functions.len(), 2);
    }

    #[test]
    fn recursion_counts_cum_once() {
        let mut p = profile();
        p.sample = vec![proto::Sample { location_id: vec![13, 13, 11], value: vec![1, 50], label: vec![] }];
        let s = summarise(&p, 10).unwrap();
        let work = s.functions.iter().find(|t| t.function == "work").unwrap();
        assert_eq!((work.flat, work.cum), (50, 50));
    }

    #[test]
    fn decode_round_trip_and_limits() {
        let bytes = profile().encode_to_vec();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &bytes).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(decode(gz.as_slice(), 1 << 20).unwrap(), profile());
        assert!(matches!(decode(gz.as_slice(), 10), Err(ProfileError::TooLarge { limit: 10 })));
        assert!(matches!(decode(&gz[..gz.len() / 2], 1 << 20), Err(ProfileError::Gzip(_))), "truncated gzip");
        assert!(matches!(decode(&b"\x1f\x8bgarbage"[..], 1 << 20), Err(ProfileError::Gzip(_))));
        assert!(decode(&b"definitely not protobuf \xff\xff\xff"[..], 1 << 20).is_err());
    }

    #[test]
    fn folded_stacks_root_first() {
        let lines = folded_stacks(&profile()).unwrap();
        assert_eq!(lines, ["main;idle 300", "main;work 100", "main;work;hash 600"]);
    }
}
