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

/// Function names of each location, leaf first (inlined frames expanded).
fn location_frames(p: &proto::Profile) -> HashMap<u64, Vec<usize>> {
    let functions: HashMap<u64, i64> = p.function.iter().map(|f| (f.id, f.name)).collect();
    p.location
        .iter()
        .map(|loc| {
            let frames =
                loc.line.iter().map(|l| functions.get(&l.function_id).copied().unwrap_or(0) as usize).collect();
            (loc.id, frames)
        })
        .collect()
}

/// The name of a string-table index, or the location's address when unsymbolised.
fn frame_name(p: &proto::Profile, name_index: usize) -> &str {
    p.string_table.get(name_index).map_or("?", String::as_str)
}

/// Summarises a profile as `go tool pprof -top` does, keeping the top `n` functions.
pub fn summarise(p: &proto::Profile, n: usize) -> Result<Summary, ProfileError> {
    let index = default_index(p)?;
    let sample_type = p.sample_type[index];
    let frames = location_frames(p);
    let unsymbolised: HashMap<u64, String> =
        p.location.iter().filter(|l| l.line.is_empty()).map(|l| (l.id, format!("{:#x}", l.address))).collect();
    // Per function name (string index, or an address label): (flat, cum).
    let mut flat: HashMap<Name<'_>, i64> = HashMap::new();
    let mut cum: HashMap<Name<'_>, i64> = HashMap::new();
    let mut total: i64 = 0;
    let mut seen: Vec<Name<'_>> = Vec::new();
    for sample in &p.sample {
        let value = sample.value.get(index).copied().unwrap_or(0);
        total += value.abs();
        if value == 0 {
            continue;
        }
        seen.clear();
        let mut leaf = true;
        for loc in &sample.location_id {
            let names: Vec<Name<'_>> = match frames.get(loc) {
                Some(f) if !f.is_empty() => f.iter().map(|i| Name::Interned(*i)).collect(),
                _ => vec![Name::Address(unsymbolised.get(loc).map_or("?", String::as_str))],
            };
            for name in names {
                if leaf {
                    *flat.entry(name).or_default() += value;
                    leaf = false;
                }
                if !seen.contains(&name) {
                    seen.push(name);
                    *cum.entry(name).or_default() += value;
                }
            }
        }
    }
    let cutoff = (total as f64 * NODE_FRACTION).abs();
    let percent = |v: i64| if total == 0 { 0.0 } else { v as f64 * 100.0 / total as f64 };
    let mut functions: Vec<TopEntry> = cum
        .iter()
        .filter(|(_, c)| c.abs() as f64 > cutoff)
        .map(|(name, c)| {
            let f = flat.get(name).copied().unwrap_or(0);
            TopEntry {
                function: name.resolve(p).to_owned(),
                flat: f,
                flat_percent: percent(f),
                cum: *c,
                cum_percent: percent(*c),
            }
        })
        .collect();
    functions.sort_by(|a, b| {
        b.flat
            .abs()
            .cmp(&a.flat.abs())
            .then_with(|| a.function.cmp(&b.function))
            .then_with(|| b.cum.abs().cmp(&a.cum.abs()))
    });
    functions.truncate(n);
    Ok(Summary {
        sample_type: format!("{}/{}", string(p, sample_type.r#type), string(p, sample_type.unit)),
        total,
        samples: p.sample.len() as u64,
        functions,
    })
}

/// A function's identity while aggregating: its interned name, or an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Name<'a> {
    Interned(usize),
    Address(&'a str),
}

impl<'a> Name<'a> {
    fn resolve(self, p: &'a proto::Profile) -> &'a str {
        match self {
            Self::Interned(i) => frame_name(p, i),
            Self::Address(a) => a,
        }
    }
}

/// Folded stacks (`root;…;leaf value`) of the default sample type, for a flame graph.
pub fn folded_stacks(p: &proto::Profile) -> Result<Vec<String>, ProfileError> {
    let index = default_index(p)?;
    let frames = location_frames(p);
    let mut stacks: HashMap<String, i64> = HashMap::new();
    for sample in &p.sample {
        let value = sample.value.get(index).copied().unwrap_or(0);
        if value <= 0 {
            continue;
        }
        let mut names: Vec<&str> = Vec::new();
        for loc in &sample.location_id {
            match frames.get(loc) {
                Some(f) if !f.is_empty() => names.extend(f.iter().map(|i| frame_name(p, *i))),
                _ => names.push("?"),
            }
        }
        names.reverse();
        let key = names.iter().map(|n| n.replace(';', ":")).collect::<Vec<_>>().join(";");
        *stacks.entry(key).or_default() += value;
    }
    let mut lines: Vec<String> = stacks.into_iter().map(|(k, v)| format!("{k} {v}")).collect();
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
