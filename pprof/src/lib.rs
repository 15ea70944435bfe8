//! Reading pprof profiles (gzip-compressed protobuf): the summary `go tool pprof -top`
//! prints — the default sample type, its total, and each function's flat and cumulative
//! value — and the folded stacks a flame graph is drawn from.
//!
//! Profiles are streamed, never held: a first pass over the decompressed bytes keeps the
//! small tables (sample types, locations, functions, strings), a second streams the
//! samples one at a time into per-function sums and a bounded call tree. Memory is what
//! the tables and the tree take, paid for from an [`memory::Allowance`] as they grow, and
//! never the size of the decompressed profile: a gzip bomb costs the decoder's window.

pub mod flamegraph;
pub mod memory;
pub mod merge;
pub mod proto;
#[cfg(test)]
mod reference;
pub mod tables;
pub mod wire;

use std::io::{BufRead, Read, Seek};

use memory::Allowance;
use tables::{SampleView, Tables, read_message};
use wire::{Stream, WireError, WireType};

/// Why a file is not a usable profile, or cannot be summarised within its bounds.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// Not gzip, a truncated gzip stream, or the file could not be read.
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
    Decode(#[from] WireError),
    /// A profile without sample types.
    #[error("the profile has no sample types")]
    NoSampleTypes,
    /// The tables or the call tree would take more memory than the analysis may use.
    #[error("summarising the profile needs more than {granted} bytes of analysis memory (at least {needed})")]
    OverBudget {
        /// Bytes the analysis asked for in all.
        needed: u64,
        /// Bytes it had.
        granted: u64,
    },
    /// The file could not be read again for the second pass.
    #[error("cannot read the profile again: {0}")]
    Reread(std::io::Error),
}

/// Frames one sample may expand to (inlined frames included): a Go stack holds at most a
/// few hundred, and the bound keeps a hostile sample from costing unbounded time.
pub const MAX_SAMPLE_FRAMES: usize = 1 << 16;

/// One function's line of `go tool pprof -top`.
#[derive(Debug, Clone, PartialEq)]
pub struct TopEntry {
    /// The function's name.
    pub function: String,
    /// Its own value.
    pub flat: i64,
    /// `flat` as a percentage of the total.
    pub flat_percent: f64,
    /// Its value with its callees'.
    pub cum: i64,
    /// `cum` as a percentage of the total.
    pub cum_percent: f64,
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

/// pprof's node fraction: nodes whose cum is under this fraction of the nodes' flat sum
/// (truncated) are dropped from its report.
const NODE_FRACTION: f64 = 0.005;

/// A function's running sums, kept together so that one sample's frame touches one cache
/// line.
#[derive(Debug, Clone, Copy)]
struct Sums {
    flat: i64,
    cum: i64,
    /// The last sample that counted this function's cum: recursion counts once per sample.
    stamp: u32,
}

/// What an analysis computes and within which bounds.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// The profile may decompress to this many bytes at most.
    pub max_decompressed_bytes: u64,
    /// Functions the summary keeps.
    pub top_n: usize,
    /// Also merge the stacks for a flame graph.
    pub flame: bool,
    /// Also keep what merging with other profiles needs: every function's flat and cum
    /// (no cutoff) and each distinct stack's value ([`merge::Mergeable`]).
    pub mergeable: bool,
}

/// A profile's summary and, when asked for, its folded stacks.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    /// The top functions.
    pub summary: Summary,
    /// The folded stacks of the default sample type.
    pub folded: Option<flamegraph::Folded>,
    /// What merging it with other profiles needs, when asked for.
    pub mergeable: Option<merge::Mergeable>,
}

/// Bytes the inflating thread hands over at a time.
const CHUNK: usize = 64 << 10;

/// Chunks in flight between the inflating thread and the parser: with the one each side
/// holds, what [`memory::BASE_BYTES`] counts for the read path.
const CHUNKS_IN_FLIGHT: usize = 2;

/// The decompressed bytes as a [`BufRead`], inflated by a thread of its own so that each
/// pass costs the longer of inflating and parsing rather than their sum.
struct Inflated {
    chunks: std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    at: usize,
    ended: bool,
}

impl Read for Inflated {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = {
            let available = self.fill_buf()?;
            let n = available.len().min(out.len());
            out[..n].copy_from_slice(&available[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Inflated {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.at == self.chunk.len() && !self.ended {
            match self.chunks.recv() {
                Ok(Ok(chunk)) => (self.chunk, self.at) = (chunk, 0),
                Ok(Err(e)) => {
                    self.ended = true;
                    return Err(e);
                }
                Err(_) => self.ended = true,
            }
        }
        Ok(&self.chunk[self.at..])
    }

    fn consume(&mut self, n: usize) {
        self.at = (self.at + n).min(self.chunk.len());
    }
}

/// Reads `reader` to its end in chunks onto `chunks`; stops when the receiver is gone.
fn inflate_into(mut reader: impl Read, chunks: std::sync::mpsc::SyncSender<std::io::Result<Vec<u8>>>) {
    loop {
        let mut chunk = vec![0u8; CHUNK];
        match read_up_to(&mut reader, &mut chunk) {
            Ok(0) => return,
            Ok(n) => {
                chunk.truncate(n);
                if chunks.send(Ok(chunk)).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = chunks.send(Err(e));
                return;
            }
        }
    }
}

/// The decompressed stream of a gzip-compressed (or plain) profile, yielding at most
/// `limit + 1` bytes so that the stream can tell "too large" from "ends here"; inflated on
/// a thread of `scope`.
fn open<'scope, 'env, R: Read + Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    mut reader: R,
    limit: u64,
) -> Result<Stream<Inflated>, ProfileError> {
    let mut first = [0u8; 2];
    let n = read_up_to(&mut reader, &mut first).map_err(ProfileError::Gzip)?;
    let chained = std::io::Cursor::new(first[..n].to_vec()).chain(reader);
    let gzip = first[..n] == [0x1f, 0x8b];
    let (tx, rx) = std::sync::mpsc::sync_channel(CHUNKS_IN_FLIGHT);
    let bound = limit.saturating_add(1);
    scope.spawn(move || {
        if gzip {
            inflate_into(flate2::read::MultiGzDecoder::new(chained).take(bound), tx);
        } else {
            inflate_into(chained.take(bound), tx);
        }
    });
    Ok(Stream::new(Inflated { chunks: rx, chunk: Vec::new(), at: 0, ended: false }, limit))
}

fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Summarises a profile as `go tool pprof -top` does (and merges its stacks when
/// `options.flame`), reading `input` twice and holding only its tables, each paid for
/// from `memory`.
///
/// Errors come in the order the whole file would show them: not gzip (or cut short)
/// first, then larger than `max_decompressed_bytes`, then not a profile or over the memory
/// allowance. So a profile that fails to parse is still read to its end (or the limit),
/// keeping nothing.
pub fn analyse(
    mut input: impl Read + Seek + Send,
    options: &Options,
    memory: &mut Allowance,
) -> Result<Analysis, ProfileError> {
    let limit = options.max_decompressed_bytes;
    memory.charge(memory::BASE_BYTES)?;
    let tables = std::thread::scope(|scope| {
        let mut stream = open(scope, &mut input, limit)?;
        match Tables::read(&mut stream, memory) {
            Ok(t) => Ok(t),
            Err(e @ (ProfileError::Decode(_) | ProfileError::OverBudget { .. })) => {
                stream.drain()?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    })?;
    let index = tables.resolve(options.mergeable, memory)?;
    input.seek(std::io::SeekFrom::Start(0)).map_err(ProfileError::Reread)?;
    std::thread::scope(|scope| {
        let stream = open(scope, &mut input, limit)?;
        aggregate(stream, &index, options, memory)
    })
}

/// The second pass: every sample, one at a time, into per-function sums and the call tree.
fn aggregate(
    mut stream: Stream<impl BufRead>,
    index: &tables::FrameIndex,
    options: &Options,
    memory: &mut Allowance,
) -> Result<Analysis, ProfileError> {
    let value_index = index.default_index()?;

    let keys = index.keys();
    let mut sums: Vec<Sums> = Vec::new();
    memory.reserve(&mut sums, keys)?;
    sums.resize(keys, Sums { flat: 0, cum: 0, stamp: u32::MAX });
    let mut tree = if options.flame { Some(flamegraph::FlameTree::new(memory)?) } else { None };
    let mut stacks: Option<std::collections::HashMap<u64, i64>> = options.mergeable.then(Default::default);
    let (mut total, mut samples) = (0i64, 0u64);
    let (mut buf, mut stack): (Vec<u8>, Vec<u32>) = (Vec::new(), Vec::new());
    while let Some(field) = stream.next_field()? {
        if field.number != 2 {
            stream.skip(field.wire_type)?;
            continue;
        }
        field.expect("sample", WireType::Len)?;
        read_message(&mut stream, &mut buf, "sample", field.at, memory)?;
        let sample = SampleView::new(&buf, field.at);
        let value = sample.value(value_index)?;
        let sample_no = samples as u32;
        samples += 1;
        total = total.wrapping_add(value.wrapping_abs());
        if value == 0 {
            continue;
        }
        let drawn = tree.is_some() && value > 0;
        stack.clear();
        let (mut leaf, mut count) = (true, 0usize);
        let mut identity = tables::Identity::new();
        let identify = stacks.is_some();
        sample.each_location(|location| {
            if identify {
                identity.word(index.identity(location));
            }
            let frames = index.frames(location);
            count += frames.len();
            if count > MAX_SAMPLE_FRAMES {
                return Err(ProfileError::Decode(WireError::DeepStack { at: field.at, max: MAX_SAMPLE_FRAMES }));
            }
            for &key in frames {
                let Some(s) = sums.get_mut(key as usize) else { continue };
                if leaf {
                    s.flat = s.flat.wrapping_add(value);
                    leaf = false;
                }
                if s.stamp != sample_no {
                    s.stamp = sample_no;
                    s.cum = s.cum.wrapping_add(value);
                }
            }
            if drawn {
                memory.reserve(&mut stack, frames.len())?;
                stack.extend_from_slice(frames);
            }
            Ok(())
        })?;
        if let Some(stacks) = stacks.as_mut() {
            let key = identity.finish();
            match stacks.get_mut(&key) {
                Some(v) => *v = v.wrapping_add(value),
                None => {
                    memory.charge(merge::BYTES_PER_STACK)?;
                    stacks.insert(key, value);
                }
            }
        }
        if let Some(tree) = tree.as_mut().filter(|_| drawn) {
            stack.reverse();
            tree.add(&stack, value, memory)?;
        }
    }

    let mergeable = stacks.map(|stacks| merge::Mergeable {
        sample_types: index.sample_type_names(),
        default_index: value_index,
        duration_nanos: index.duration_nanos,
        functions: (0..keys)
            .filter(|k| sums[*k].flat != 0 || sums[*k].cum != 0)
            .map(|k| merge::FunctionTotal {
                function: index.name(k as u32).to_owned(),
                flat: sums[k].flat,
                cum: sums[k].cum,
            })
            .collect(),
        stacks,
    });
    let percent = |v: i64| if total == 0 { 0.0 } else { v as f64 * 100.0 / total as f64 };
    let (flat, cum) = (|k: usize| sums[k].flat, |k: usize| sums[k].cum);
    let cutoff = merge::node_cutoff((0..keys).fold(0i64, |s, k| s.wrapping_add(flat(k)))).unsigned_abs();
    let mut order: Vec<usize> = (0..keys)
        .filter(|k| (flat(*k) != 0 || cum(*k) != 0) && (cutoff == 0 || cum(*k).unsigned_abs() >= cutoff))
        .collect();
    order.sort_by(|a, b| {
        flat(*b)
            .unsigned_abs()
            .cmp(&flat(*a).unsigned_abs())
            .then_with(|| index.name(*a as u32).cmp(index.name(*b as u32)))
            .then_with(|| cum(*b).unsigned_abs().cmp(&cum(*a).unsigned_abs()))
    });
    order.truncate(options.top_n);
    let functions = order
        .into_iter()
        .map(|k| TopEntry {
            function: index.name(k as u32).to_owned(),
            flat: flat(k),
            flat_percent: percent(flat(k)),
            cum: cum(k),
            cum_percent: percent(cum(k)),
        })
        .collect();
    let (kind, unit) = index.sample_types[value_index];
    let summary =
        Summary { sample_type: format!("{}/{}", index.string(kind), index.string(unit)), total, samples, functions };
    let folded = tree.map(|t| t.into_folded(index, memory)).transpose()?;
    Ok(Analysis { summary, folded, mergeable })
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
    use prost::Message;

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

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, bytes).unwrap();
        gz.finish().unwrap()
    }

    fn options(max_decompressed_bytes: u64) -> Options {
        Options { max_decompressed_bytes, top_n: 10, flame: true, mergeable: false }
    }

    fn analyse_bytes(bytes: &[u8], options: &Options, memory: &mut Allowance) -> Result<Analysis, ProfileError> {
        analyse(std::io::Cursor::new(bytes), options, memory)
    }

    fn summarise(p: &proto::Profile, n: usize) -> Summary {
        let o = Options { top_n: n, ..options(1 << 30) };
        analyse_bytes(&gzip(&p.encode_to_vec()), &o, &mut Allowance::unlimited()).unwrap().summary
    }

    fn folded(p: &proto::Profile) -> Vec<String> {
        let a = analyse_bytes(&p.encode_to_vec(), &options(1 << 30), &mut Allowance::unlimited()).unwrap();
        a.folded.unwrap().lines().into_iter().map(str::to_owned).collect()
    }

    #[test]
    fn flat_and_cum_like_pprof() {
        let s = summarise(&profile(), 10);
        assert_eq!(s.sample_type, "cpu/nanoseconds", "the last sample type is the default");
        assert_eq!(s.total, 1000);
        assert_eq!(s.samples, 3);
        let rows: Vec<(&str, i64, i64)> = s.functions.iter().map(|t| (t.function.as_str(), t.flat, t.cum)).collect();
        assert_eq!(rows, [("hash", 600, 600), ("idle", 300, 300), ("work", 100, 700), ("main", 0, 1000)]);
        assert!((s.functions[0].flat_percent - 60.0).abs() < 1e-9);
        assert!((s.functions[3].cum_percent - 100.0).abs() < 1e-9);
    }

    #[test]
    fn the_node_cutoff_is_pprof_s_truncated_fraction_of_the_flat_sum_kept_at_or_above() {
        // Σ flat = 2000: the cutoff is int64(2000 × 0.005) = 10, so `idle` (cum 10) stays,
        // as go tool pprof -top shows it; with cum 9 it goes.
        let mut p = profile();
        p.sample = vec![
            proto::Sample { location_id: vec![10, 11], value: vec![1, 1981], label: vec![] },
            proto::Sample { location_id: vec![13, 11], value: vec![1, 9], label: vec![] },
            proto::Sample { location_id: vec![12, 11], value: vec![1, 10], label: vec![] },
        ];
        let names: Vec<String> = summarise(&p, 10).functions.into_iter().map(|t| t.function).collect();
        assert_eq!(names, ["hash", "idle", "work", "main"]);
        p.sample[2].value = vec![1, 9];
        p.sample[0].value = vec![1, 1982];
        let names: Vec<String> = summarise(&p, 10).functions.into_iter().map(|t| t.function).collect();
        assert_eq!(names, ["hash", "work", "main"]);
    }

    fn mergeable(p: &proto::Profile) -> merge::Mergeable {
        let o = Options { mergeable: true, ..options(1 << 30) };
        analyse_bytes(&gzip(&p.encode_to_vec()), &o, &mut Allowance::unlimited()).unwrap().mergeable.unwrap()
    }

    #[test]
    fn stacks_are_identified_by_their_locations_not_by_the_file_s_ids() {
        let p = profile();
        // The same profile as another process writes it: other ids, other string order.
        let mut q = p.clone();
        let renumber = |id: u64| id * 7 + 100;
        for l in &mut q.location {
            l.id = renumber(l.id);
            for line in &mut l.line {
                line.function_id = renumber(line.function_id);
            }
        }
        for f in &mut q.function {
            f.id = renumber(f.id);
        }
        for s in &mut q.sample {
            s.location_id = s.location_id.iter().map(|id| renumber(*id)).collect();
        }
        q.string_table.swap(5, 8);
        for f in &mut q.function {
            f.name = match f.name {
                5 => 8,
                8 => 5,
                other => other,
            };
        }
        let (a, b) = (mergeable(&p), mergeable(&q));
        assert_eq!(a.stacks, b.stacks);
        let d = merge::diff(&[&a], &[&b], 0).unwrap();
        assert_eq!((d.total, d.rows.len()), (0, 0), "a profile less itself is nothing");
        // A line number is part of a location: the same stack at another line differs.
        let mut r = p.clone();
        r.location[0].line[0].line = 42;
        let d = merge::diff(&[&a], &[&mergeable(&r)], 0).unwrap();
        assert_eq!(d.total, 1200, "600 gone from one stack, 600 come to another");
        assert!(d.rows.is_empty(), "the functions' sums did not change");
        // Without asking, nothing is kept for merging.
        assert!(
            analyse_bytes(&gzip(&p.encode_to_vec()), &options(1 << 30), &mut Allowance::unlimited())
                .unwrap()
                .mergeable
                .is_none()
        );
    }

    #[test]
    fn default_sample_type_wins_over_last() {
        let mut p = profile();
        p.default_sample_type = 1;
        let s = summarise(&p, 2);
        assert_eq!(s.sample_type, "samples/count");
        assert_eq!(s.total, 10);
        assert_eq!(s.functions.len(), 2);
    }

    #[test]
    fn recursion_counts_cum_once() {
        let mut p = profile();
        p.sample = vec![proto::Sample { location_id: vec![13, 13, 11], value: vec![1, 50], label: vec![] }];
        let s = summarise(&p, 10);
        let work = s.functions.iter().find(|t| t.function == "work").unwrap();
        assert_eq!((work.flat, work.cum), (50, 50));
    }

    #[test]
    fn folded_stacks_root_first() {
        assert_eq!(folded(&profile()), ["main;idle 300", "main;work 100", "main;work;hash 600"]);
    }

    #[test]
    fn limits_and_malformed_input() {
        let gz = gzip(&profile().encode_to_vec());
        let mut memory = Allowance::unlimited();
        assert!(analyse_bytes(&gz, &options(1 << 20), &mut memory).is_ok());
        let refused = analyse_bytes(&gz, &options(10), &mut memory).unwrap_err();
        assert!(matches!(refused, ProfileError::TooLarge { limit: 10 }), "{refused}");
        let cut = analyse_bytes(&gz[..gz.len() / 2], &options(1 << 20), &mut memory).unwrap_err();
        assert!(matches!(cut, ProfileError::Gzip(_)), "truncated gzip: {cut}");
        let garbage = analyse_bytes(b"\x1f\x8bgarbage", &options(1 << 20), &mut memory).unwrap_err();
        assert!(matches!(garbage, ProfileError::Gzip(_)), "{garbage}");
        let text = analyse_bytes(b"definitely not protobuf \xff\xff\xff", &options(1 << 20), &mut memory);
        assert!(matches!(text, Err(ProfileError::Decode(_))), "{text:?}");
        let empty = analyse_bytes(b"", &options(1 << 20), &mut memory).unwrap_err();
        assert!(matches!(empty, ProfileError::NoSampleTypes), "{empty}");
    }

    #[test]
    fn a_gzip_bomb_is_refused_as_too_large_holding_nothing() {
        // 64 MiB of zeros (64 KiB gzipped) against a 16 MiB limit: zeros are not protobuf
        // (field number 0), yet the reason is the size, as when the whole was inflated.
        let bomb = biometrics_test_support::gzip_bomb(64 << 20);
        let mut memory = Allowance::new(memory::BASE_BYTES, None);
        let err = analyse_bytes(&bomb, &options(16 << 20), &mut memory).unwrap_err();
        assert!(matches!(err, ProfileError::TooLarge { limit } if limit == 16 << 20), "{err}");
        assert_eq!(memory.peak(), memory::BASE_BYTES, "nothing grew past the base");
        // Within the limit the same zeros are simply not a profile.
        let small = biometrics_test_support::gzip_bomb(1 << 20);
        let err = analyse_bytes(&small, &options(16 << 20), &mut Allowance::unlimited()).unwrap_err();
        assert!(matches!(err, ProfileError::Decode(WireError::FieldZero { at: 0 })), "{err}");
    }

    #[test]
    fn a_profile_whose_tables_outgrow_the_allowance_is_refused() {
        // A valid profile whose one string is 8 MiB: it compresses to a few KiB.
        let mut p = profile();
        p.string_table.push("x".repeat(8 << 20));
        let gz = gzip(&p.encode_to_vec());
        assert!(gz.len() < 64 << 10);
        let mut memory = Allowance::new(2 << 20, None);
        let err = analyse_bytes(&gz, &options(1 << 30), &mut memory).unwrap_err();
        assert!(matches!(err, ProfileError::OverBudget { granted, .. } if granted == 2 << 20), "{err}");
        assert!(memory.peak() <= 2 << 20);
        // Many small locations: the same.
        let mut p = profile();
        p.location = (1..=200_000).map(|id| proto::Location { id, address: id, ..Default::default() }).collect();
        let mut memory = Allowance::new(2 << 20, None);
        let err = analyse_bytes(&gzip(&p.encode_to_vec()), &options(1 << 30), &mut memory).unwrap_err();
        assert!(matches!(err, ProfileError::OverBudget { .. }), "{err}");
        // With room, it works.
        let mut memory = Allowance::new(64 << 20, None);
        analyse_bytes(&gzip(&p.encode_to_vec()), &options(1 << 30), &mut memory).unwrap();
        assert!(memory.peak() < 64 << 20);
    }

    #[test]
    fn messages_and_stacks_past_their_bounds_are_refused() {
        let mut p = profile();
        p.sample.push(proto::Sample { location_id: vec![1 << 40; 200_000], value: vec![1, 1], label: vec![] });
        let err = analyse_bytes(&p.encode_to_vec(), &options(1 << 30), &mut Allowance::unlimited()).unwrap_err();
        assert!(matches!(err, ProfileError::Decode(WireError::MessageTooLong { what: "sample", .. })), "{err}");
        let mut p = profile();
        p.sample.push(proto::Sample { location_id: vec![11; 70_000], value: vec![1, 1], label: vec![] });
        let err = analyse_bytes(&p.encode_to_vec(), &options(1 << 30), &mut Allowance::unlimited()).unwrap_err();
        assert!(matches!(err, ProfileError::Decode(WireError::DeepStack { .. })), "{err}");
    }

    #[test]
    fn the_fuzz_seeds_bombs_included_stay_within_the_fuzz_allowance() {
        // What fuzz/fuzz_targets/pprof_summary.rs checks, on its seeds, in every test run.
        let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/pprof_summary");
        let mut bombs = 0;
        for entry in std::fs::read_dir(&seeds).unwrap() {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let granted = 4 << 20;
            let mut memory = Allowance::new(granted, None);
            let result = analyse_bytes(&data, &options(1 << 20), &mut memory);
            assert!(memory.peak() <= granted, "{}", path.display());
            if path.file_name().unwrap().to_string_lossy().starts_with("bomb") {
                bombs += 1;
                assert!(matches!(result, Err(ProfileError::TooLarge { .. })), "{}: {result:?}", path.display());
            } else {
                assert!(result.is_ok(), "{}: {result:?}", path.display());
            }
        }
        assert_eq!(bombs, 2);
    }

    /// A deterministic xorshift: the same cases every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
    }

    /// A random profile: same-named functions, lines naming missing functions, locations
    /// without lines, unknown locations in stacks, recursion, zero and negative values.
    fn random_profile(rng: &mut Rng) -> proto::Profile {
        let mut strings: Vec<String> = vec!["".into(), "alloc".into(), "count".into(), "cpu".into(), "bytes".into()];
        let names = 1 + rng.below(12);
        for i in 0..names {
            strings.push(format!("pkg.fn{i}"));
        }
        let functions = 1 + rng.below(20);
        let function: Vec<proto::Function> = (1..=functions)
            .map(|id| proto::Function { id, name: 5 + rng.below(names) as i64, ..Default::default() })
            .collect();
        let locations = 1 + rng.below(30);
        let location: Vec<proto::Location> = (1..=locations)
            .map(|id| {
                let lines = rng.below(4);
                proto::Location {
                    id: id * 3,
                    address: 0x1000 + id,
                    line: (0..lines)
                        .map(|_| proto::Line { function_id: 1 + rng.below(functions + 2), ..Default::default() })
                        .collect(),
                    ..Default::default()
                }
            })
            .collect();
        let types = 1 + rng.below(3) as usize;
        let sample = (0..rng.below(200))
            .map(|_| {
                let depth = rng.below(12);
                let location_id = (0..depth).map(|_| 3 * (1 + rng.below(locations + 1))).collect();
                let value = (0..types)
                    .map(|_| match rng.below(10) {
                        0 => 0,
                        1 => -(1000 + rng.below(1000) as i64),
                        _ => 1000 + rng.below(1000) as i64,
                    })
                    .collect();
                proto::Sample { location_id, value, label: vec![] }
            })
            .collect();
        proto::Profile {
            sample_type: (0..types)
                .map(|i| proto::ValueType { r#type: 1 + 2 * (i as i64 % 2), unit: 2 + 2 * (i as i64 % 2) })
                .collect(),
            sample,
            location,
            function,
            string_table: strings,
            default_sample_type: if rng.below(3) == 0 { 3 } else { 0 },
            ..Default::default()
        }
    }

    /// The profile's fields in a random order, as Go's runtime interleaves them: each
    /// entry encoded alone (concatenated protobuf messages merge), strings kept in order.
    fn shuffled_encoding(p: &proto::Profile, rng: &mut Rng) -> Vec<u8> {
        let mut pieces: Vec<Vec<u8>> = Vec::new();
        pieces.extend(
            p.sample.iter().map(|s| proto::Profile { sample: vec![s.clone()], ..Default::default() }.encode_to_vec()),
        );
        pieces.extend(
            p.location
                .iter()
                .map(|l| proto::Profile { location: vec![l.clone()], ..Default::default() }.encode_to_vec()),
        );
        pieces.extend(
            p.function.iter().map(|f| proto::Profile { function: vec![*f], ..Default::default() }.encode_to_vec()),
        );
        for i in (1..pieces.len()).rev() {
            pieces.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let head = proto::Profile { sample_type: p.sample_type.clone(), ..Default::default() }.encode_to_vec();
        let tail = proto::Profile {
            string_table: p.string_table.clone(),
            default_sample_type: p.default_sample_type,
            ..Default::default()
        }
        .encode_to_vec();
        [vec![head], pieces, vec![tail]].concat().concat()
    }

    #[test]
    fn streaming_equals_the_in_memory_summary_on_generated_profiles() {
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        for case in 0..400 {
            let p = random_profile(&mut rng);
            let expected = reference::summarise(&p, 10);
            let expected_folded = reference::folded_stacks(&p).unwrap();
            for bytes in [p.encode_to_vec(), shuffled_encoding(&p, &mut rng)] {
                let mut memory = Allowance::new(16 << 20, None);
                let got = analyse_bytes(&gzip(&bytes), &options(1 << 20), &mut memory);
                match (&expected, got) {
                    (Ok(e), Ok(g)) => {
                        assert_eq!(&g.summary, e, "case {case}");
                        let lines: Vec<String> = g.folded.unwrap().lines().into_iter().map(str::to_owned).collect();
                        let mut want: Vec<String> =
                            expected_folded.iter().filter(|l| !l.starts_with(' ')).cloned().collect();
                        want.sort();
                        assert_eq!(lines, want, "case {case}");
                    }
                    (Err(ProfileError::NoSampleTypes), Err(ProfileError::NoSampleTypes)) => {}
                    (e, g) => panic!("case {case}: expected {e:?}, got {g:?}"),
                }
            }
        }
    }

    #[test]
    fn cut_and_corrupted_profiles_fail_cleanly_within_their_allowance() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for case in 0..60 {
            let p = random_profile(&mut rng);
            let bytes = p.encode_to_vec();
            let granted = 1 << 20;
            let check = |input: &[u8]| {
                let mut memory = Allowance::new(granted, None);
                let _ = analyse_bytes(input, &options(1 << 20), &mut memory);
                assert!(memory.peak() <= granted, "case {case}");
                let _ =
                    analyse_bytes(&gzip(input), &options(bytes.len() as u64 / 2), &mut Allowance::new(granted, None));
            };
            for cut in (0..bytes.len()).step_by(1 + bytes.len() / 40) {
                check(&bytes[..cut]);
            }
            for _ in 0..40 {
                let mut flipped = bytes.clone();
                if flipped.is_empty() {
                    break;
                }
                let at = rng.below(flipped.len() as u64) as usize;
                flipped[at] ^= 1 << rng.below(8);
                check(&flipped);
            }
        }
    }

    #[test]
    fn the_flame_tree_stays_bounded_and_keeps_every_sample() {
        // Random stacks over many functions: far more distinct paths than the tree holds.
        let mut rng = Rng(7);
        let functions = 5000u64;
        let mut p = profile();
        p.string_table.extend((0..functions).map(|i| format!("f{i}")));
        p.function =
            (1..=functions).map(|id| proto::Function { id, name: 8 + id as i64, ..Default::default() }).collect();
        p.location = (1..=functions)
            .map(|id| proto::Location {
                id,
                line: vec![proto::Line { function_id: id, ..Default::default() }],
                ..Default::default()
            })
            .collect();
        p.sample = (0..20_000)
            .map(|_| proto::Sample {
                location_id: (0..20).map(|_| 1 + rng.below(functions)).collect(),
                value: vec![1, 1 + rng.below(100) as i64],
                label: vec![],
            })
            .collect();
        let positive: i64 = p.sample.iter().map(|s| s.value[1]).sum();
        let mut memory = Allowance::new(32 << 20, None);
        let a = analyse_bytes(&gzip(&p.encode_to_vec()), &options(1 << 30), &mut memory).unwrap();
        let folded = a.folded.unwrap();
        assert!(folded.merged_below > 0, "the tree had to merge");
        assert!(folded.text.len() <= flamegraph::MAX_FOLDED_BYTES);
        let drawn: i64 = folded.lines().iter().map(|l| l.rsplit(' ').next().unwrap().parse::<i64>().unwrap()).sum();
        assert_eq!(drawn, positive, "merged frames keep their value in their callers");
        assert_eq!(a.summary.total, positive);
    }
}
