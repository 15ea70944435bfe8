//! A strict reader of the Prometheus text exposition format (0.0.4) and of OpenMetrics
//! text (1.0): every line is either understood or refused with its line number, so an
//! endpoint that answers something else (an HTML page, a truncated body) gives a clear
//! reason instead of an empty reading.
//!
//! It is our own because the small crates for the job read label values by splitting on
//! `,` and `=` (a value holding either is cut apart, silently) and skip lines they do not
//! understand; the one that is exact is LGPL-licensed and generated from a grammar.
//! The format is small enough that a strict reader is shorter than the workarounds.

use std::borrow::Cow;

/// A metric family's declared type (`# TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    /// `counter`.
    Counter,
    /// `gauge`.
    Gauge,
    /// `histogram`.
    Histogram,
    /// `gaugehistogram` (OpenMetrics).
    GaugeHistogram,
    /// `summary`.
    Summary,
    /// `info` (OpenMetrics).
    Info,
    /// `stateset` (OpenMetrics).
    StateSet,
    /// `untyped` or `unknown`.
    Unknown,
}

impl MetricType {
    fn parse(word: &str) -> Option<Self> {
        Some(match word {
            "counter" => Self::Counter,
            "gauge" => Self::Gauge,
            "histogram" => Self::Histogram,
            "gaugehistogram" => Self::GaugeHistogram,
            "summary" => Self::Summary,
            "info" => Self::Info,
            "stateset" => Self::StateSet,
            "untyped" | "unknown" => Self::Unknown,
            _ => return None,
        })
    }
}

/// One sample line: a series and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    /// The metric name (`http_requests_total`, `…_bucket`).
    pub name: Cow<'a, str>,
    /// Its labels in the order written; values unescaped.
    pub labels: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// The value (may be NaN or ±Inf: the format allows them).
    pub value: f64,
}

impl Sample<'_> {
    /// The value of label `name`.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_ref())
    }
}

/// A parsed exposition.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposition<'a> {
    /// Every sample, in order.
    pub samples: Vec<Sample<'a>>,
    /// Every `# TYPE` line: family name and type.
    pub types: Vec<(&'a str, MetricType)>,
}

impl Exposition<'_> {
    /// The declared type of family `name`.
    pub fn type_of(&self, name: &str) -> Option<MetricType> {
        self.types.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
    }
}

/// Why an exposition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpositionError {
    /// The body is not UTF-8.
    #[error("the metrics exposition is not UTF-8 text (byte {0})")]
    NotUtf8(usize),
    /// A line that is not the format.
    #[error("not the Prometheus text format: line {line}: {what} in {text:?}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        what: &'static str,
        /// The line, cut to 80 characters.
        text: String,
    },
    /// More series than the reader keeps.
    #[error("the metrics exposition has more than {0} series")]
    TooManySeries(usize),
}

/// Reads `body` (at most `max_series` samples) strictly.
pub fn parse(body: &[u8], max_series: usize) -> Result<Exposition<'_>, ExpositionError> {
    let text = std::str::from_utf8(body).map_err(|e| ExpositionError::NotUtf8(e.valid_up_to()))?;
    parse_str(text, max_series)
}

/// Reads `text` (at most `max_series` samples) strictly.
pub fn parse_str(text: &str, max_series: usize) -> Result<Exposition<'_>, ExpositionError> {
    let mut out = Exposition::default();
    let mut eof_at = None;
    for (index, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let fail =
            |what: &'static str| ExpositionError::Line { line: index + 1, what, text: line.chars().take(80).collect() };
        if eof_at.is_some() {
            if line.is_empty() {
                continue;
            }
            return Err(fail("text after '# EOF'"));
        }
        let trimmed = line.trim_start_matches([' ', '\t']);
        if trimmed.is_empty() {
            continue;
        }
        if let Some(comment) = trimmed.strip_prefix('#') {
            match read_comment(comment).map_err(fail)? {
                Comment::Type(name, kind) => out.types.push((name, kind)),
                Comment::Eof => eof_at = Some(index),
                Comment::Other => {}
            }
            continue;
        }
        if out.samples.len() >= max_series {
            return Err(ExpositionError::TooManySeries(max_series));
        }
        out.samples.push(read_sample(trimmed).map_err(fail)?);
    }
    Ok(out)
}

enum Comment<'a> {
    Type(&'a str, MetricType),
    Eof,
    Other,
}

fn read_comment(rest: &str) -> Result<Comment<'_>, &'static str> {
    let mut words = rest.split([' ', '\t']).filter(|w| !w.is_empty());
    match words.next() {
        Some("TYPE") => {
            let name = words.next().ok_or("'# TYPE' without a metric name")?;
            if !is_metric_name(name) {
                return Err("'# TYPE' names an invalid metric");
            }
            let kind = words.next().and_then(MetricType::parse).ok_or("'# TYPE' with an unknown type")?;
            if words.next().is_some() {
                return Err("'# TYPE' with words after the type");
            }
            Ok(Comment::Type(name, kind))
        }
        Some("EOF") if words.next().is_none() => Ok(Comment::Eof),
        // HELP, UNIT and free comments carry nothing the signals use.
        _ => Ok(Comment::Other),
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// A cursor over one sample line.
struct Cursor<'a> {
    line: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.line.as_bytes().get(self.at).copied()
    }

    fn blanks(&mut self) -> bool {
        let start = self.at;
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.at += 1;
        }
        self.at > start
    }

    fn take_while(&mut self, first: impl Fn(u8) -> bool, rest: impl Fn(u8) -> bool) -> Option<&'a str> {
        let start = self.at;
        if !self.peek().is_some_and(first) {
            return None;
        }
        self.at += 1;
        while self.peek().is_some_and(&rest) {
            self.at += 1;
        }
        Some(&self.line[start..self.at])
    }

    fn name(&mut self) -> Option<&'a str> {
        self.take_while(
            |b| b.is_ascii_alphabetic() || b == b'_' || b == b':',
            |b| b.is_ascii_alphanumeric() || b == b'_' || b == b':',
        )
    }

    fn label_name(&mut self) -> Option<&'a str> {
        self.take_while(|b| b.is_ascii_alphabetic() || b == b'_', |b| b.is_ascii_alphanumeric() || b == b'_')
    }

    /// A double-quoted string with `\\`, `\"` and `\n` escapes; the cursor is on the quote.
    fn quoted(&mut self) -> Result<Cow<'a, str>, &'static str> {
        self.at += 1;
        let start = self.at;
        let bytes = self.line.as_bytes();
        let mut owned: Option<String> = None;
        let mut run = start;
        loop {
            match bytes.get(self.at) {
                None => return Err("a label value without its closing quote"),
                Some(b'"') => {
                    let value = match owned {
                        None => Cow::Borrowed(&self.line[start..self.at]),
                        Some(mut s) => {
                            s.push_str(&self.line[run..self.at]);
                            Cow::Owned(s)
                        }
                    };
                    self.at += 1;
                    return Ok(value);
                }
                Some(b'\\') => {
                    let s = owned.get_or_insert_with(String::new);
                    s.push_str(&self.line[run..self.at]);
                    match bytes.get(self.at + 1) {
                        Some(b'\\') => s.push('\\'),
                        Some(b'"') => s.push('"'),
                        Some(b'n') => s.push('\n'),
                        _ => return Err("an escape other than \\\\, \\\" or \\n in a label value"),
                    }
                    self.at += 2;
                    run = self.at;
                }
                Some(_) => self.at += 1,
            }
        }
    }

    fn token(&mut self) -> &'a str {
        let start = self.at;
        while self.peek().is_some_and(|b| b != b' ' && b != b'\t') {
            self.at += 1;
        }
        &self.line[start..self.at]
    }
}

type Labels<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

fn read_sample(line: &str) -> Result<Sample<'_>, &'static str> {
    let mut c = Cursor { line, at: 0 };
    let mut name = c.name().map(Cow::Borrowed);
    let mut labels = Labels::new();
    let mut blank = name.is_some() && c.blanks();
    if c.peek() == Some(b'{') {
        c.at += 1;
        read_labels(&mut c, &mut name, &mut labels)?;
        blank = c.blanks();
    } else if name.is_none() {
        return Err("a sample line must start with a metric name");
    }
    let name = name.ok_or("a sample without a metric name")?;
    if !blank {
        return Err("no blank between the series and its value");
    }
    let value = parse_float(c.token()).ok_or("a value that is not a number")?;
    c.blanks();
    match c.peek() {
        None => {}
        // An OpenMetrics exemplar follows the value.
        Some(b'#') => {}
        Some(_) => {
            let timestamp = c.token();
            if parse_float(timestamp).is_none_or(|t| !t.is_finite()) {
                return Err("a timestamp that is not a number");
            }
            c.blanks();
            if !matches!(c.peek(), None | Some(b'#')) {
                return Err("words after the value and timestamp");
            }
        }
    }
    Ok(Sample { name, labels, value })
}

/// Reads labels up to and including `}`. A first quoted item not followed by `=` is the
/// metric name (the UTF-8 names of Prometheus 3).
fn read_labels<'a>(
    c: &mut Cursor<'a>,
    name: &mut Option<Cow<'a, str>>,
    labels: &mut Labels<'a>,
) -> Result<(), &'static str> {
    let mut first = true;
    loop {
        c.blanks();
        match c.peek() {
            Some(b'}') => {
                c.at += 1;
                return Ok(());
            }
            None => return Err("a label set without its closing '}'"),
            _ => {}
        }
        let label = if c.peek() == Some(b'"') {
            c.quoted()?
        } else {
            Cow::Borrowed(c.label_name().ok_or("an invalid label name")?)
        };
        c.blanks();
        if c.peek() == Some(b'=') {
            c.at += 1;
            c.blanks();
            if c.peek() != Some(b'"') {
                return Err("a label value must be double-quoted");
            }
            let value = c.quoted()?;
            if labels.iter().any(|(k, _)| *k == label) {
                return Err("a label given twice in one series");
            }
            labels.push((label, value));
        } else if first && name.is_none() && matches!(c.peek(), Some(b',' | b'}')) {
            *name = Some(label);
        } else {
            return Err("a label without '=\"value\"'");
        }
        first = false;
        c.blanks();
        match c.peek() {
            Some(b',') => c.at += 1,
            Some(b'}') => {}
            None => return Err("a label set without its closing '}'"),
            _ => return Err("labels must be separated by ','"),
        }
    }
}

/// Go's `strconv.ParseFloat` forms the format uses: decimals, exponents, `NaN`, `±Inf`.
fn parse_float(token: &str) -> Option<f64> {
    token.parse::<f64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Sample<'_> {
        let mut e = parse_str(line, 10).unwrap();
        assert_eq!(e.samples.len(), 1);
        e.samples.remove(0)
    }

    #[test]
    fn reads_the_text_format() {
        let text = "# HELP http_requests_total Requests.\n# TYPE http_requests_total counter\nhttp_requests_total{code=\"200\",method=\"GET\"} 1027 1395066363000\nhttp_requests_total{code=\"500\",method=\"GET\",} 3\n\n# TYPE rpc_duration_seconds histogram\nrpc_duration_seconds_bucket{le=\"+Inf\"} 7\nup 1\n";
        let e = parse_str(text, 100).unwrap();
        assert_eq!(e.samples.len(), 4);
        assert_eq!(e.type_of("http_requests_total"), Some(MetricType::Counter));
        assert_eq!(e.type_of("rpc_duration_seconds"), Some(MetricType::Histogram));
        assert_eq!(e.samples[0].label("code"), Some("200"));
        assert_eq!(e.samples[0].value, 1027.0);
        assert_eq!(e.samples[1].label("method"), Some("GET"), "a trailing comma is allowed");
        assert_eq!(e.samples[2].label("le"), Some("+Inf"));
        assert_eq!(e.samples[3].name, "up");
    }

    #[test]
    fn label_values_keep_commas_equals_braces_and_escapes() {
        let s = one(r#"m{path="/a,b=c{}",q="say \"hi\"\nback\\slash"} 2"#);
        assert_eq!(s.label("path"), Some("/a,b=c{}"));
        assert_eq!(s.label("q"), Some("say \"hi\"\nback\\slash"));
    }

    #[test]
    fn special_values_and_blanks() {
        assert!(one("m NaN").value.is_nan());
        assert_eq!(one("m +Inf").value, f64::INFINITY);
        assert_eq!(one("m\t-Inf").value, f64::NEG_INFINITY);
        assert_eq!(one("m 1.5e3").value, 1500.0);
        assert_eq!(one("  m { a = \"1\" }   7  ").label("a"), Some("1"));
    }

    #[test]
    fn reads_openmetrics() {
        let text = "# TYPE foo counter\n# UNIT foo seconds\nfoo_total 17.0 1520879607.789 # {trace_id=\"KOO5S4vxi0o\"} 0.67\nfoo_created 1520430000.123\n# EOF\n";
        let e = parse_str(text, 10).unwrap();
        assert_eq!(e.samples.len(), 2);
        assert_eq!(e.samples[0].value, 17.0);
        assert!(matches!(parse_str("# EOF\nfoo 1\n", 10), Err(ExpositionError::Line { line: 2, .. })));
    }

    #[test]
    fn utf8_metric_names() {
        let s = one(r#"{"http.server.duration", le="0.5"} 3"#);
        assert_eq!(s.name, "http.server.duration");
        assert_eq!(s.label("le"), Some("0.5"));
    }

    #[test]
    fn refuses_what_is_not_the_format() {
        let html = "<!DOCTYPE html>\n<html><body>Not Found</body></html>\n";
        let err = parse_str(html, 10).unwrap_err();
        assert_eq!(
            err.to_string(),
            "not the Prometheus text format: line 1: a sample line must start with a metric name in \"<!DOCTYPE html>\""
        );
        for (bad, what) in [
            ("m{a=\"1\"", "a label set without its closing '}'"),
            ("m{a=1} 2", "a label value must be double-quoted"),
            ("m{a=\"1} 2", "a label value without its closing quote"),
            ("m{a=\"\\t\"} 2", "an escape other than \\\\, \\\" or \\n in a label value"),
            ("m{a=\"1\",a=\"2\"} 2", "a label given twice in one series"),
            ("m{a=\"1\" b=\"2\"} 2", "labels must be separated by ','"),
            ("m", "no blank between the series and its value"),
            ("m abc", "a value that is not a number"),
            ("m 1 later", "a timestamp that is not a number"),
            ("m 1 2 3", "words after the value and timestamp"),
            ("# TYPE m wobble", "'# TYPE' with an unknown type"),
        ] {
            match parse_str(bad, 10) {
                Err(ExpositionError::Line { line: 1, what: got, .. }) => assert_eq!(got, what, "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert_eq!(parse(b"m 1\n\xff", 10), Err(ExpositionError::NotUtf8(4)));
        assert_eq!(parse_str("a 1\nb 2\nc 3\n", 2), Err(ExpositionError::TooManySeries(2)));
    }
}
