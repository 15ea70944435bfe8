//! The first pass over a profile: everything but the samples (sample types, locations,
//! functions, the string table), kept compactly and paid for, then resolved into dense
//! frame keys so that the second pass can aggregate samples by indexing arrays.
//!
//! Go writes the samples before the locations, functions and strings (the runtime
//! interleaves locations with samples, and the string table comes last), so names cannot
//! be resolved while samples stream by: hence two passes over the decompressed stream,
//! each holding only these tables.

use std::io::BufRead;

use super::{
    ProfileError,
    memory::Allowance,
    wire::{Fields, MAX_MESSAGE_BYTES, Stream, WireError, WireType},
};

/// A location as read: its id, its address (named when it has no lines), its mapping's id,
/// and the range of its lines' function ids in `Tables::line_functions` (and of their line
/// and column numbers in `Tables::line_numbers`).
#[derive(Debug, Clone, Copy)]
struct RawLocation {
    id: u64,
    address: u64,
    mapping: u64,
    start: u32,
    end: u32,
}

/// A function as read: its id and the string indices of what identifies it when profiles
/// are merged (pprof's function key), with its start line.
#[derive(Debug, Clone, Copy)]
struct RawFunction {
    id: u64,
    name: i64,
    system_name: i64,
    filename: i64,
    start_line: i64,
}

/// A mapping as read: what pprof's merge identifies it by, and its start (addresses are
/// compared relative to it, as address-space randomisation moves it).
#[derive(Debug, Clone, Copy)]
struct RawMapping {
    id: u64,
    start: u64,
    limit: u64,
    offset: u64,
    filename: i64,
    build_id: i64,
}

/// What the first pass keeps.
#[derive(Debug, Default)]
pub struct Tables {
    /// (type, unit) string indices of each sample type.
    pub sample_types: Vec<(i64, i64)>,
    /// `default_sample_type`'s string index.
    pub default_sample_type: i64,
    /// Number of samples.
    pub samples: u64,
    /// How long the profile sampled.
    pub duration_nanos: i64,
    text: Vec<u8>,
    /// String `i` is `text[ends[i - 1]..ends[i]]` (from 0 for the first).
    string_ends: Vec<usize>,
    functions: Vec<RawFunction>,
    mappings: Vec<RawMapping>,
    locations: Vec<RawLocation>,
    line_functions: Vec<u64>,
    /// Each line's line and column numbers, mixed into one word.
    line_numbers: Vec<u64>,
}

/// Reads a length-delimited field's body into `buf` (reused across messages), refusing
/// bodies over [`MAX_MESSAGE_BYTES`].
pub fn read_message(
    stream: &mut Stream<impl BufRead>,
    buf: &mut Vec<u8>,
    what: &'static str,
    at: u64,
    memory: &mut Allowance,
) -> Result<(), ProfileError> {
    let len = stream.read_len()?;
    if len > MAX_MESSAGE_BYTES {
        return Err(ProfileError::Decode(WireError::MessageTooLong { what, len, at }));
    }
    buf.clear();
    memory.reserve(buf, len as usize)?;
    stream.read_into(buf, len)
}

fn to_u32(n: usize, what: &'static str) -> Result<u32, ProfileError> {
    u32::try_from(n).map_err(|_| ProfileError::Decode(WireError::TooMany { what }))
}

impl Tables {
    /// Reads every top-level field but the samples' bodies.
    pub fn read(stream: &mut Stream<impl BufRead>, memory: &mut Allowance) -> Result<Self, ProfileError> {
        let mut t = Tables::default();
        let mut buf = Vec::new();
        while let Some(field) = stream.next_field()? {
            match field.number {
                1 => {
                    field.expect("sample_type", WireType::Len)?;
                    read_message(stream, &mut buf, "sample type", field.at, memory)?;
                    let mut f = Fields::new(&buf, "sample type", field.at);
                    let (mut kind, mut unit) = (0i64, 0i64);
                    while let Some((n, v)) = f.next_field()? {
                        match n {
                            1 => kind = f.expect_varint(v)? as i64,
                            2 => unit = f.expect_varint(v)? as i64,
                            _ => {}
                        }
                    }
                    memory.push(&mut t.sample_types, (kind, unit))?;
                }
                2 => {
                    field.expect("sample", WireType::Len)?;
                    t.samples += 1;
                    let len = stream.read_len()?;
                    stream.skip_bytes(len)?;
                }
                4 => {
                    field.expect("location", WireType::Len)?;
                    read_message(stream, &mut buf, "location", field.at, memory)?;
                    t.location(&buf, field.at, memory)?;
                }
                5 => {
                    field.expect("function", WireType::Len)?;
                    read_message(stream, &mut buf, "function", field.at, memory)?;
                    let mut f = Fields::new(&buf, "function", field.at);
                    let mut function = RawFunction { id: 0, name: 0, system_name: 0, filename: 0, start_line: 0 };
                    while let Some((n, v)) = f.next_field()? {
                        match n {
                            1 => function.id = f.expect_varint(v)?,
                            2 => function.name = f.expect_varint(v)? as i64,
                            3 => function.system_name = f.expect_varint(v)? as i64,
                            4 => function.filename = f.expect_varint(v)? as i64,
                            5 => function.start_line = f.expect_varint(v)? as i64,
                            _ => {}
                        }
                    }
                    memory.push(&mut t.functions, function)?;
                }
                3 => {
                    field.expect("mapping", WireType::Len)?;
                    read_message(stream, &mut buf, "mapping", field.at, memory)?;
                    let mut f = Fields::new(&buf, "mapping", field.at);
                    let mut mapping = RawMapping { id: 0, start: 0, limit: 0, offset: 0, filename: 0, build_id: 0 };
                    while let Some((n, v)) = f.next_field()? {
                        match n {
                            1 => mapping.id = f.expect_varint(v)?,
                            2 => mapping.start = f.expect_varint(v)?,
                            3 => mapping.limit = f.expect_varint(v)?,
                            4 => mapping.offset = f.expect_varint(v)?,
                            5 => mapping.filename = f.expect_varint(v)? as i64,
                            6 => mapping.build_id = f.expect_varint(v)? as i64,
                            _ => {}
                        }
                    }
                    memory.push(&mut t.mappings, mapping)?;
                }
                10 => {
                    field.expect("duration_nanos", WireType::Varint)?;
                    t.duration_nanos = stream.read_varint()? as i64;
                }
                6 => {
                    field.expect("string_table", WireType::Len)?;
                    t.string(stream, field.at, memory)?;
                }
                14 => {
                    field.expect("default_sample_type", WireType::Varint)?;
                    t.default_sample_type = stream.read_varint()? as i64;
                }
                _ => stream.skip(field.wire_type)?,
            }
        }
        memory.free(buf);
        Ok(t)
    }

    fn location(&mut self, buf: &[u8], at: u64, memory: &mut Allowance) -> Result<(), ProfileError> {
        let start = to_u32(self.line_functions.len(), "location lines")?;
        let mut f = Fields::new(buf, "location", at);
        let (mut id, mut address, mut mapping) = (0u64, 0u64, 0u64);
        while let Some((n, v)) = f.next_field()? {
            match n {
                1 => id = f.expect_varint(v)?,
                2 => mapping = f.expect_varint(v)?,
                3 => address = f.expect_varint(v)?,
                4 => {
                    let mut line = Fields::new(f.expect_bytes(v)?, "location line", at);
                    let (mut function_id, mut number, mut column) = (0u64, 0u64, 0u64);
                    while let Some((n, v)) = line.next_field()? {
                        match n {
                            1 => function_id = line.expect_varint(v)?,
                            2 => number = line.expect_varint(v)?,
                            3 => column = line.expect_varint(v)?,
                            _ => {}
                        }
                    }
                    memory.push(&mut self.line_functions, function_id)?;
                    memory.push(&mut self.line_numbers, mix(number, column))?;
                }
                _ => {}
            }
        }
        let end = to_u32(self.line_functions.len(), "location lines")?;
        memory.push(&mut self.locations, RawLocation { id, address, mapping, start, end })
    }

    fn string(
        &mut self,
        stream: &mut Stream<impl BufRead>,
        at: u64,
        memory: &mut Allowance,
    ) -> Result<(), ProfileError> {
        let len = stream.read_len()?;
        // A claimed length the stream cannot hold is read (and fails) rather than paid for.
        if len > usize::MAX as u64 / 2 {
            stream.skip_bytes(len)?;
        }
        let start = self.text.len();
        memory.reserve(&mut self.text, len as usize)?;
        stream.read_into(&mut self.text, len)?;
        if std::str::from_utf8(&self.text[start..]).is_err() {
            return Err(ProfileError::Decode(WireError::Utf8 { index: self.string_ends.len(), at }));
        }
        let end = self.text.len();
        memory.push(&mut self.string_ends, end)
    }

    /// Resolves names and frames into the index the second pass aggregates with, and each
    /// location's identity across profiles when `identify` (for merging; 0 otherwise).
    pub fn resolve(self, identify: bool, memory: &mut Allowance) -> Result<FrameIndex, ProfileError> {
        let Tables {
            sample_types,
            default_sample_type,
            samples,
            duration_nanos,
            text,
            string_ends,
            mut functions,
            mut mappings,
            mut locations,
            line_functions,
            line_numbers,
        } = self;
        // Each entry was checked as UTF-8 when read, so the whole is too; this only moves it.
        let text = String::from_utf8(text).map_err(|_| ProfileError::Decode(WireError::Utf8 { index: 0, at: 0 }))?;
        let mut index = FrameIndex {
            sample_types,
            default_sample_type,
            samples,
            duration_nanos,
            text,
            string_ends,
            extra: String::new(),
            names: Vec::new(),
            frames: Vec::new(),
            lookup: Lookup::Dense(Vec::new()),
            identities: Vec::new(),
        };
        // Later entries with the same id win, as when the tables were maps.
        functions.reverse();
        functions.sort_by_key(|f| f.id);
        functions.dedup_by_key(|f| f.id);
        mappings.reverse();
        mappings.sort_by_key(|m| m.id);
        mappings.dedup_by_key(|m| m.id);
        locations.reverse();
        locations.sort_by_key(|l| l.id);
        locations.dedup_by_key(|l| l.id);

        // Candidate names: one per function, one per location without lines (its address,
        // as pprof shows it), and "?" for lines naming a function that is not there.
        memory.reserve(&mut index.names, functions.len() + 1)?;
        for f in &functions {
            let span = index.string_span(f.name);
            index.names.push(span);
        }
        let unknown = index.add_extra("?", memory)?;
        let mut address_names = Vec::new();
        for loc in locations.iter().filter(|l| l.start == l.end) {
            let name = index.add_extra(&format!("{:#x}", loc.address), memory)?;
            memory.push(&mut address_names, name)?;
        }
        // Same-named functions share a key, as in pprof: sort candidates by name, number
        // the distinct names.
        let candidates = index.names.len();
        let mut order: Vec<u32> = Vec::new();
        memory.reserve(&mut order, candidates)?;
        order.extend(0..to_u32(candidates, "function names")?);
        order.sort_by(|a, b| index.name(*a).cmp(index.name(*b)));
        let mut key_of: Vec<u32> = Vec::new();
        memory.reserve(&mut key_of, candidates)?;
        key_of.resize(candidates, 0);
        let mut names: Vec<Span> = Vec::new();
        for (i, c) in order.iter().enumerate() {
            if i == 0 || index.name(order[i - 1]) != index.name(*c) {
                memory.push(&mut names, index.names[*c as usize])?;
            }
            key_of[*c as usize] = (names.len() - 1) as u32;
        }
        memory.free(order);

        memory.reserve(&mut index.frames, line_functions.len() + address_names.len())?;
        let mut ranges: Vec<(u32, u32)> = Vec::new();
        memory.reserve(&mut ranges, locations.len())?;
        let mut addresses = address_names.iter();
        for loc in &locations {
            let start = to_u32(index.frames.len(), "frames")?;
            if loc.start == loc.end {
                // Unsymbolised: pprof shows the address.
                let name = addresses.next().copied().unwrap_or(unknown);
                index.frames.push(key_of[name as usize]);
            } else {
                for function_id in &line_functions[loc.start as usize..loc.end as usize] {
                    let candidate = match functions.binary_search_by_key(function_id, |f| f.id) {
                        Ok(i) => i as u32,
                        Err(_) => unknown,
                    };
                    index.frames.push(key_of[candidate as usize]);
                }
            }
            ranges.push((start, to_u32(index.frames.len(), "frames")?));
        }

        // Each location's identity across profiles, as pprof's merge keys it: its mapping,
        // its address relative to the mapping, and each line's function and numbers.
        if identify {
            memory.reserve(&mut index.identities, locations.len())?;
        }
        for loc in locations.iter().filter(|_| identify) {
            let mut h = Identity::new();
            if let Ok(i) = mappings.binary_search_by_key(&loc.mapping, |m| m.id) {
                let m = &mappings[i];
                let file = if index.string(m.build_id).is_empty() { m.filename } else { m.build_id };
                h.word(m.limit.wrapping_sub(m.start)).word(m.offset).text(index.string(file));
                h.word(loc.address.wrapping_sub(m.start));
            } else {
                h.word(u64::MAX).word(loc.address);
            }
            for at in loc.start as usize..loc.end as usize {
                match functions.binary_search_by_key(&line_functions[at], |f| f.id) {
                    Ok(i) => {
                        let f = &functions[i];
                        h.text(index.string(f.name))
                            .text(index.string(f.system_name))
                            .text(index.string(f.filename))
                            .word(f.start_line as u64);
                    }
                    Err(_) => {
                        h.word(u64::MAX);
                    }
                }
                h.word(line_numbers[at]);
            }
            index.identities.push(h.finish());
        }
        memory.free(line_functions);
        memory.free(line_numbers);
        memory.free(functions);
        memory.free(mappings);
        memory.free(address_names);
        memory.free(key_of);
        let candidate_names = std::mem::replace(&mut index.names, names);
        memory.free(candidate_names);

        // Go numbers locations 1..n: then the id indexes an array of frame ranges; any
        // other numbering is looked up by binary search.
        let max_id = locations.last().map_or(0, |l| l.id);
        if max_id <= 2 * locations.len() as u64 + 1024 {
            let mut dense: Vec<(u32, u32)> = Vec::new();
            memory.reserve(&mut dense, max_id as usize + 1)?;
            dense.resize(max_id as usize + 1, (0, 0));
            for (loc, &(a, b)) in locations.iter().zip(&ranges) {
                // A location of one frame (most) keeps its key in place of the range: one
                // memory access less per frame in the second pass.
                dense[loc.id as usize] = if b - a == 1 { (index.frames[a as usize], ONE_FRAME) } else { (a, b) };
            }
            memory.free(ranges);
            index.lookup = Lookup::Dense(dense);
            if identify {
                let mut by_id: Vec<u64> = Vec::new();
                memory.reserve(&mut by_id, max_id as usize + 1)?;
                by_id.resize(max_id as usize + 1, 0);
                for (loc, identity) in locations.iter().zip(&index.identities) {
                    by_id[loc.id as usize] = *identity;
                }
                let in_order = std::mem::replace(&mut index.identities, by_id);
                memory.free(in_order);
            }
        } else {
            let mut ids = Vec::new();
            memory.reserve(&mut ids, locations.len())?;
            ids.extend(locations.iter().map(|l| l.id));
            index.lookup = Lookup::Sorted { ids, ranges };
        }
        memory.free(locations);
        Ok(index)
    }
}

/// Where a name's text is: in the string table, or in the names the agent made.
#[derive(Debug, Clone, Copy)]
struct Span {
    extra: bool,
    start: usize,
    end: usize,
}

/// In a dense lookup entry `(key, ONE_FRAME)`: the location's only frame is `key`.
const ONE_FRAME: u32 = u32::MAX;

/// Location id → its range in `FrameIndex::frames` (empty: no such location).
#[derive(Debug)]
enum Lookup {
    /// Indexed by id.
    Dense(Vec<(u32, u32)>),
    /// Ids sorted, ranges in the same order.
    Sorted { ids: Vec<u64>, ranges: Vec<(u32, u32)> },
}

/// Every location's frames as dense function keys (leaf first, inlined frames expanded),
/// and each key's name.
#[derive(Debug)]
pub struct FrameIndex {
    /// (type, unit) string indices of each sample type.
    pub sample_types: Vec<(i64, i64)>,
    /// `default_sample_type`'s string index.
    pub default_sample_type: i64,
    /// Number of samples.
    pub samples: u64,
    text: String,
    string_ends: Vec<usize>,
    extra: String,
    names: Vec<Span>,
    frames: Vec<u32>,
    lookup: Lookup,
    /// Each location's identity across profiles, in the order of the sorted ids.
    identities: Vec<u64>,
    /// How long the profile sampled.
    pub duration_nanos: i64,
}

/// A line and column number as one word.
fn mix(line: u64, column: u64) -> u64 {
    line ^ column.rotate_left(32)
}

/// A 64-bit FNV-1a hash over words and length-prefixed text: what two profiles agree a
/// location is, compared without holding either's names.
pub struct Identity(u64);

impl Identity {
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    /// The empty identity.
    pub fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    /// Adds a word.
    pub fn word(&mut self, w: u64) -> &mut Self {
        for b in w.to_le_bytes() {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(Self::PRIME);
        }
        self
    }

    /// Adds a text, its length first so that concatenations differ.
    pub fn text(&mut self, t: &str) -> &mut Self {
        self.word(t.len() as u64);
        for b in t.bytes() {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(Self::PRIME);
        }
        self
    }

    /// The hash.
    pub fn finish(&self) -> u64 {
        self.0
    }
}

impl Default for Identity {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameIndex {
    fn string_span(&self, index: i64) -> Span {
        match usize::try_from(index).ok().filter(|i| *i < self.string_ends.len()) {
            Some(i) => {
                Span { extra: false, start: if i == 0 { 0 } else { self.string_ends[i - 1] }, end: self.string_ends[i] }
            }
            None => Span { extra: false, start: 0, end: 0 },
        }
    }

    fn add_extra(&mut self, name: &str, memory: &mut Allowance) -> Result<u32, ProfileError> {
        let start = self.extra.len();
        memory.charge(name.len() as u64)?;
        self.extra.push_str(name);
        memory.push(&mut self.names, Span { extra: true, start, end: self.extra.len() })?;
        to_u32(self.names.len() - 1, "function names")
    }

    fn text_of(&self, span: Span) -> &str {
        let arena = if span.extra { &self.extra } else { &self.text };
        arena.get(span.start..span.end).unwrap_or("")
    }

    /// The string table entry at `index` ("" when there is none, as in pprof).
    pub fn string(&self, index: i64) -> &str {
        self.text_of(self.string_span(index))
    }

    /// The name of function key `key`.
    pub fn name(&self, key: u32) -> &str {
        self.names.get(key as usize).map_or("", |s| self.text_of(*s))
    }

    /// Number of function keys.
    pub fn keys(&self) -> usize {
        self.names.len()
    }

    /// The frames of a location, leaf first; none for an unknown location.
    #[inline]
    pub fn frames(&self, location: u64) -> &[u32] {
        let range = match &self.lookup {
            Lookup::Dense(d) => match usize::try_from(location).ok().and_then(|i| d.get(i)) {
                Some((key, ONE_FRAME)) => return std::slice::from_ref(key),
                Some(range) => *range,
                None => return &[],
            },
            Lookup::Sorted { ids, ranges } => match ids.binary_search(&location) {
                Ok(i) => ranges[i],
                Err(_) => return &[],
            },
        };
        self.frames.get(range.0 as usize..range.1 as usize).unwrap_or(&[])
    }

    /// A location's identity across profiles (0 for an unknown location).
    #[inline]
    pub fn identity(&self, location: u64) -> u64 {
        match &self.lookup {
            Lookup::Dense(_) => usize::try_from(location).ok().and_then(|i| self.identities.get(i)).copied(),
            Lookup::Sorted { ids, .. } => {
                ids.binary_search(&location).ok().and_then(|i| self.identities.get(i).copied())
            }
        }
        .unwrap_or(0)
    }

    /// `type/unit` of every sample type.
    pub fn sample_type_names(&self) -> Vec<String> {
        self.sample_types.iter().map(|(kind, unit)| format!("{}/{}", self.string(*kind), self.string(*unit))).collect()
    }

    /// The sample index pprof shows by default: `default_sample_type`, else the last.
    pub fn default_index(&self) -> Result<usize, ProfileError> {
        if self.sample_types.is_empty() {
            return Err(ProfileError::NoSampleTypes);
        }
        let wanted = self.string(self.default_sample_type);
        let by_name = (self.default_sample_type != 0)
            .then(|| self.sample_types.iter().position(|t| self.string(t.0) == wanted))
            .flatten();
        Ok(by_name.unwrap_or(self.sample_types.len() - 1))
    }
}

/// The fields of a sample the second pass needs: the value at `index` and the location ids.
pub struct SampleView<'a> {
    body: &'a [u8],
    at: u64,
}

impl<'a> SampleView<'a> {
    /// The sample message `body`, found at `at`.
    pub fn new(body: &'a [u8], at: u64) -> Self {
        Self { body, at }
    }

    /// `value[index]`, 0 when the sample has fewer values.
    pub fn value(&self, index: usize) -> Result<i64, ProfileError> {
        let mut f = Fields::new(self.body, "sample", self.at);
        let (mut seen, mut found) = (0usize, None);
        while let Some((n, v)) = f.next_field()? {
            if n == 2 {
                f.each_varint(v, |x| {
                    if seen == index {
                        found = Some(x as i64);
                    }
                    seen += 1;
                    Ok(())
                })?;
            }
        }
        Ok(found.unwrap_or(0))
    }

    /// Calls `f` with each location id, leaf first.
    pub fn each_location(&self, mut f: impl FnMut(u64) -> Result<(), ProfileError>) -> Result<(), ProfileError> {
        let mut fields = Fields::new(self.body, "sample", self.at);
        while let Some((n, v)) = fields.next_field()? {
            if n == 1 {
                fields.each_varint(v, &mut f)?;
            }
        }
        Ok(())
    }
}
