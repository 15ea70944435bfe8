//! The agent's own CPU profile (pprof-rs), served as a gzip-compressed pprof protobuf so
//! the same tools read it as the app's.

use std::collections::HashMap;

use prost::Message;

use crate::profile::proto;

/// Profiles this process for `seconds` and returns the gzip-compressed pprof protobuf.
/// Blocking: run it on a blocking thread.
pub fn cpu_profile(seconds: u64) -> Result<Vec<u8>, String> {
    const HZ: i32 = 99;
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(HZ)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
        .map_err(|e| format!("cannot start the profiler: {e}"))?;
    std::thread::sleep(std::time::Duration::from_secs(seconds));
    let report = guard.report().build().map_err(|e| format!("cannot build the report: {e}"))?;
    let period = 1_000_000_000 / i64::from(HZ);
    let mut builder = Builder::default();
    let mut samples = Vec::new();
    for (frames, count) in &report.data {
        let mut locations = Vec::new();
        for frame in &frames.frames {
            let names: Vec<String> = frame.iter().map(pprof::Symbol::name).collect();
            locations.push(builder.location(&names));
        }
        let count = *count as i64;
        samples.push(proto::Sample { location_id: locations, value: vec![count, count * period], label: vec![] });
    }
    let profile = proto::Profile {
        sample_type: vec![
            proto::ValueType { r#type: builder.string("samples"), unit: builder.string("count") },
            proto::ValueType { r#type: builder.string("cpu"), unit: builder.string("nanoseconds") },
        ],
        period_type: Some(proto::ValueType { r#type: builder.string("cpu"), unit: builder.string("nanoseconds") }),
        period,
        duration_nanos: i64::try_from(report.timing.duration.as_nanos()).unwrap_or(i64::MAX),
        sample: samples,
        function: builder.functions,
        location: builder.locations,
        string_table: builder.strings,
        ..Default::default()
    };
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &profile.encode_to_vec()).map_err(|e| e.to_string())?;
    gz.finish().map_err(|e| e.to_string())
}

/// Interns strings, functions and locations as profile.proto wants them.
struct Builder {
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    functions: Vec<proto::Function>,
    function_ids: HashMap<String, u64>,
    locations: Vec<proto::Location>,
    location_ids: HashMap<Vec<String>, u64>,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            strings: vec![String::new()],
            string_ids: HashMap::from([(String::new(), 0)]),
            functions: Vec::new(),
            function_ids: HashMap::new(),
            locations: Vec::new(),
            location_ids: HashMap::new(),
        }
    }
}

impl Builder {
    fn string(&mut self, s: &str) -> i64 {
        if let Some(id) = self.string_ids.get(s) {
            return *id;
        }
        let id = self.strings.len() as i64;
        self.strings.push(s.to_owned());
        self.string_ids.insert(s.to_owned(), id);
        id
    }

    fn function(&mut self, name: &str) -> u64 {
        if let Some(id) = self.function_ids.get(name) {
            return *id;
        }
        let id = self.functions.len() as u64 + 1;
        let name_id = self.string(name);
        self.functions.push(proto::Function { id, name: name_id, system_name: name_id, ..Default::default() });
        self.function_ids.insert(name.to_owned(), id);
        id
    }

    /// A location for one frame: its inlined symbols, innermost first.
    fn location(&mut self, names: &[String]) -> u64 {
        if let Some(id) = self.location_ids.get(names) {
            return *id;
        }
        let id = self.locations.len() as u64 + 1;
        let line = names.iter().map(|n| proto::Line { function_id: self.function(n), ..Default::default() }).collect();
        self.locations.push(proto::Location { id, line, ..Default::default() });
        self.location_ids.insert(names.to_vec(), id);
        id
    }
}
