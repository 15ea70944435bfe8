//! Numbers as `go tool pprof -top` prints them: its unit scaling (`measurement.Scale`,
//! `ScaledLabel`), its percentages, the output unit it picks for a report
//! (`selectOutputUnit`) and the text report itself (`printText`), so that our `top` can be
//! read, and diffed, against pprof's.
//!
//! Ported from pprof's `internal/measurement` and `internal/report` (Go 1.19's vendored
//! copy); the agent's `render_top` prints its own simpler table in raw units.

use std::fmt::Write;

use biometrics_crds::v1alpha1::TopFunction;

/// One unit of a unit type: its printed name, the aliases it is recognised by, and how
/// many base units it is.
struct Unit {
    name: &'static str,
    aliases: &'static [&'static str],
    factor: f64,
}

/// Units of one dimension, smallest first, and the one values fall back to.
struct UnitType {
    default: Unit,
    units: &'static [Unit],
}

const fn unit(name: &'static str, aliases: &'static [&'static str], factor: f64) -> Unit {
    Unit { name, aliases, factor }
}

const KIB: f64 = 1024.0;

/// pprof's `unitTypes`: bytes, time, and Google Compute Units.
const UNIT_TYPES: [UnitType; 3] = [
    UnitType {
        default: unit("B", &["b", "byte"], 1.0),
        units: &[
            unit("B", &["b", "byte"], 1.0),
            unit("kB", &["kb", "kbyte", "kilobyte"], KIB),
            unit("MB", &["mb", "mbyte", "megabyte"], KIB * KIB),
            unit("GB", &["gb", "gbyte", "gigabyte"], KIB * KIB * KIB),
            unit("TB", &["tb", "tbyte", "terabyte"], KIB * KIB * KIB * KIB),
            unit("PB", &["pb", "pbyte", "petabyte"], KIB * KIB * KIB * KIB * KIB),
        ],
    },
    UnitType {
        default: unit("s", &[], 1e9),
        units: &[
            unit("ns", &["ns", "nanosecond"], 1.0),
            unit("us", &["μs", "us", "microsecond"], 1e3),
            unit("ms", &["ms", "millisecond"], 1e6),
            unit("s", &["s", "sec", "second"], 1e9),
            unit("hrs", &["hour", "hr"], 3600e9),
        ],
    },
    UnitType {
        default: unit("GCU", &[], 1.0),
        units: &[
            unit("n*GCU", &["nanogcu"], 1e-9),
            unit("u*GCU", &["microgcu"], 1e-6),
            unit("m*GCU", &["milligcu"], 1e-3),
            unit("GCU", &["gcu"], 1.0),
            unit("k*GCU", &["kilogcu"], 1e3),
            unit("M*GCU", &["megagcu"], 1e6),
            unit("G*GCU", &["gigagcu"], 1e9),
            unit("T*GCU", &["teragcu"], 1e12),
            unit("P*GCU", &["petagcu"], 1e15),
        ],
    },
];

impl UnitType {
    /// pprof's `sniffUnit`: lower case, a trailing `s` dropped from names longer than two
    /// bytes (so `nanoseconds` is `nanosecond`, and — as in pprof — `μs` is not found).
    fn sniff(&self, name: &str) -> Option<&Unit> {
        let lower = name.to_lowercase();
        let name = if lower.len() > 2 { lower.strip_suffix('s').unwrap_or(&lower) } else { &lower };
        self.units.iter().find(|u| u.aliases.contains(&name))
    }

    fn auto_scale(&self, value: f64) -> Option<(f64, &'static str)> {
        let mut best: Option<&Unit> = None;
        for u in self.units {
            if u.factor >= best.map_or(0.0, |b| b.factor) && value / u.factor >= 1.0 {
                best = Some(u);
            }
        }
        best.map(|u| (value / u.factor, u.name))
    }

    fn convert(&self, value: i64, from: &str, to: &str) -> Option<(f64, String)> {
        let from = self.sniff(from)?;
        let v = value as f64 * from.factor;
        let fallback = (v / self.default.factor, self.default.name.to_owned());
        if to == "minimum" || to == "auto" {
            return Some(self.auto_scale(v).map_or(fallback, |(v, u)| (v, u.to_owned())));
        }
        Some(self.sniff(to).map_or(fallback, |u| (v / u.factor, u.name.to_owned())))
    }
}

/// A value in `from` units expressed in `to` (`minimum`/`auto`: the largest unit it is at
/// least one of), with the unit's name; empty for units not worth printing (`count`).
pub fn scale(value: i64, from: &str, to: &str) -> (f64, String) {
    if value < 0 && value != i64::MIN {
        let (v, u) = scale(-value, from, to);
        return (-v, u);
    }
    for unit_type in &UNIT_TYPES {
        if let Some(scaled) = unit_type.convert(value, from, to) {
            return scaled;
        }
    }
    match to {
        "count" | "sample" | "unit" | "minimum" | "auto" => (value as f64, String::new()),
        _ => (value as f64, to.to_owned()),
    }
}

/// `measurement.ScaledLabel`: `1.50ms`, `12MB`, `0`.
pub fn scaled_label(value: i64, from: &str, to: &str) -> String {
    let (v, unit) = scale(value, from, to);
    let printed = format!("{v:.2}");
    let printed = printed.strip_suffix(".00").unwrap_or(&printed);
    if printed == "0" || printed == "-0" { "0".to_owned() } else { format!("{printed}{unit}") }
}

/// `measurement.Percentage`: six characters, `  100%`, `12.50%`, ` 0.12%`.
pub fn percentage(value: i64, total: i64) -> String {
    let ratio = if total == 0 { 0.0 } else { (value as f64 / total as f64).abs() * 100.0 };
    if (99.95..=100.05).contains(&ratio) {
        "  100%".to_owned()
    } else if ratio >= 1.0 {
        format!("{ratio:5.2}%")
    } else {
        format!("{:>5}%", go_g2(ratio))
    }
}

/// Go's `%.2g`: two significant digits, trailing zeros dropped, exponent form (`1.2e-05`)
/// below 1e-4.
fn go_g2(value: f64) -> String {
    if value == 0.0 {
        return "0".to_owned();
    }
    // Rust's `{:.1e}` rounds to two significant digits exactly as Go does (half to even on
    // the exact binary value): `1.2e-3`.
    let e = format!("{value:.1e}");
    let (mantissa, exponent) = e.split_once('e').unwrap_or((&e, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = mantissa.strip_prefix('-').map_or(("", mantissa), |m| ("-", m));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let digits = digits.trim_end_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    if !(-4..2).contains(&exponent) {
        let (first, rest) = digits.split_at(1);
        let rest = if rest.is_empty() { String::new() } else { format!(".{rest}") };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        return format!("{sign}{first}{rest}e{exp_sign}{:02}", exponent.abs());
    }
    let point = exponent + 1;
    let fixed = if point <= 0 {
        format!("0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
    } else if point as usize >= digits.len() {
        format!("{digits}{}", "0".repeat(point as usize - digits.len()))
    } else {
        let (int, frac) = digits.split_at(point as usize);
        format!("{int}.{frac}")
    };
    format!("{sign}{fixed}")
}

/// pprof's `selectOutputUnit` for the default `-unit=minimum`: the unit of the smallest
/// non-zero node value, or a larger one when the total is more than a hundred times that
/// value (so the smallest still shows as at least 0.01). Any other `requested` unit is used
/// as given.
pub fn output_unit(requested: &str, nodes: &[(i64, i64)], total: i64, sample_unit: &str) -> String {
    if requested != "minimum" || nodes.is_empty() {
        return requested.to_owned();
    }
    let mut min_value: i64 = 0;
    for (flat, cum) in nodes {
        let node_min = if *flat == 0 { cum.saturating_abs() } else { flat.saturating_abs() };
        if node_min > 0 && (min_value == 0 || node_min < min_value) {
            min_value = node_min;
        }
    }
    let max_value = total;
    if min_value == 0 {
        min_value = max_value;
    }
    let (_, min_unit) = scale(min_value, sample_unit, "minimum");
    let (_, max_unit) = scale(max_value, sample_unit, "minimum");
    let mut unit = min_unit.clone();
    if min_unit != max_unit && min_value.saturating_mul(100) < max_value {
        unit = scale(min_value.saturating_mul(100), sample_unit, "minimum").1;
    }
    if unit.is_empty() { sample_unit.to_owned() } else { unit }
}

/// What a top report is made of: one profile's (or several merged profiles') default
/// sample type, its total, how long it sampled, and the functions to show in order.
#[derive(Debug, Clone, Copy)]
pub struct Top<'a> {
    /// `type/unit`, e.g. `cpu/nanoseconds`.
    pub sample_type: &'a str,
    /// The sum of the sample type's values.
    pub total: i64,
    /// How long the profile sampled, when known.
    pub duration_nanos: Option<i64>,
    /// The functions, as pprof orders them.
    pub functions: &'a [TopFunction],
}

impl Top<'_> {
    fn type_and_unit(&self) -> (&str, &str) {
        self.sample_type.split_once('/').unwrap_or((self.sample_type, "count"))
    }
}

/// The report `go tool pprof -top [-unit=U]` prints for the same profile, from its `Type:`
/// line on: pprof's `File:`, `Time:`, `Dropped … nodes` and `Showing top N nodes out of M`
/// lines need facts the browser's answer does not carry, and are left out.
pub fn render_top(top: &Top<'_>, requested_unit: &str) -> String {
    let (kind, sample_unit) = top.type_and_unit();
    let nodes: Vec<(i64, i64)> = top.functions.iter().map(|f| (f.flat, f.cum)).collect();
    let unit = output_unit(requested_unit, &nodes, top.total, sample_unit);
    let value = |v: i64| scaled_label(v, sample_unit, &unit);
    let mut out = String::new();
    let _ = writeln!(out, "Type: {kind}");
    if let Some(duration) = top.duration_nanos.filter(|d| *d != 0) {
        let (total_nanos, total_unit) = scale(top.total, sample_unit, "nanoseconds");
        let ratio = if total_unit == "ns" && total_nanos != 0.0 {
            format!("({})", percentage(total_nanos as i64, duration))
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "Duration: {}, Total samples = {} {ratio}",
            scaled_label(duration, "nanoseconds", "auto"),
            value(top.total)
        );
    }
    let flat_sum: i64 = top.functions.iter().map(|f| f.flat).sum();
    let _ = writeln!(
        out,
        "Showing nodes accounting for {}, {} of {} total",
        value(flat_sum),
        percentage(flat_sum, top.total).trim(),
        value(top.total)
    );
    let _ = writeln!(out, "{:>10} {:>5}% {:>5}% {:>10} {:>5}%", "flat", "flat", "sum", "cum", "cum");
    let mut running = 0;
    for f in top.functions {
        running += f.flat;
        let _ = writeln!(
            out,
            "{:>10} {} {} {:>10} {}  {}",
            value(f.flat),
            percentage(f.flat, top.total),
            percentage(running, top.total),
            value(f.cum),
            percentage(f.cum, top.total),
            f.function
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(function: &str, flat: i64, cum: i64) -> TopFunction {
        TopFunction { function: function.into(), flat, flat_percent: 0.0, cum, cum_percent: 0.0 }
    }

    #[test]
    fn scaling_as_pprof_does() {
        assert_eq!(scaled_label(1_500_000, "nanoseconds", "minimum"), "1.50ms");
        assert_eq!(scaled_label(1_000_000_000, "nanoseconds", "auto"), "1s");
        assert_eq!(scaled_label(10_000_000, "nanoseconds", "ms"), "10ms");
        assert_eq!(scaled_label(10_000_000, "nanoseconds", "s"), "0.01s");
        assert_eq!(scaled_label(4_000_000, "nanoseconds", "s"), "0");
        assert_eq!(scaled_label(-4_000_000, "nanoseconds", "ms"), "-4ms");
        assert_eq!(scaled_label(123, "nanoseconds", "ns"), "123ns");
        assert_eq!(scaled_label(2 * 3600 * 1_000_000_000, "nanoseconds", "auto"), "2hrs");
        assert_eq!(scaled_label(1536, "bytes", "minimum"), "1.50kB");
        assert_eq!(scaled_label(3 << 20, "bytes", "MB"), "3MB");
        assert_eq!(scaled_label(42, "count", "count"), "42");
        assert_eq!(scaled_label(42, "count", "minimum"), "42");
        assert_eq!(scaled_label(42, "widgets", "widgets"), "42widgets");
        // pprof drops a trailing `s` only from names longer than two bytes: `μs` is three.
        assert_eq!(scaled_label(5, "μs", "auto"), "5");
    }

    #[test]
    fn percentages_as_pprof_prints_them() {
        assert_eq!(percentage(1, 1), "  100%");
        assert_eq!(percentage(9996, 10000), "  100%");
        assert_eq!(percentage(125, 1000), "12.50%");
        assert_eq!(percentage(-125, 1000), "12.50%", "absolute");
        assert_eq!(percentage(5, 1000), "  0.5%");
        assert_eq!(percentage(123, 100_000), " 0.12%");
        assert_eq!(percentage(995, 1_000_000), "  0.1%");
        assert_eq!(percentage(1, 100_000_000), "1e-06%");
        assert_eq!(percentage(0, 1000), "    0%");
        assert_eq!(percentage(5, 0), "    0%");
        assert_eq!(go_g2(0.0995), "0.1");
        assert_eq!(go_g2(0.00123), "0.0012");
        assert_eq!(go_g2(0.0000123), "1.2e-05");
        assert_eq!(go_g2(0.5), "0.5");
        assert_eq!(go_g2(1.0), "1");
    }

    #[test]
    fn output_unit_as_pprof_selects_it() {
        // Smallest 10ms of 1s total: ms.
        assert_eq!(
            output_unit(
                "minimum",
                &[(990_000_000, 990_000_000), (10_000_000, 10_000_000)],
                1_000_000_000,
                "nanoseconds"
            ),
            "ms"
        );
        // Smallest 10ms of 5s: 100 × 10ms = 1s, so seconds (printed as 0.01s).
        assert_eq!(output_unit("minimum", &[(10_000_000, 5_000_000_000)], 5_000_000_000, "nanoseconds"), "s");
        // A zero flat counts its cum.
        assert_eq!(output_unit("minimum", &[(0, 2_000), (5_000_000, 5_000_000)], 5_002_000, "nanoseconds"), "us");
        assert_eq!(output_unit("minimum", &[(3, 3)], 10, "count"), "count");
        assert_eq!(output_unit("ns", &[(3, 3)], 10, "nanoseconds"), "ns");
        assert_eq!(output_unit("minimum", &[], 10, "nanoseconds"), "minimum");
    }

    #[test]
    fn a_top_report_as_pprof_prints_it() {
        let functions = [
            f("main.burnCPU", 980_000_000, 990_000_000),
            f("runtime.futex", 10_000_000, 10_000_000),
            f("main.main", 0, 990_000_000),
        ];
        let top = Top {
            sample_type: "cpu/nanoseconds",
            total: 1_000_000_000,
            duration_nanos: Some(1_010_000_000),
            functions: &functions,
        };
        let expected = "\
Type: cpu
Duration: 1.01s, Total samples = 1000ms (99.01%)
Showing nodes accounting for 990ms, 99.00% of 1000ms total
      flat  flat%   sum%        cum   cum%
     980ms 98.00% 98.00%      990ms 99.00%  main.burnCPU
      10ms  1.00% 99.00%       10ms  1.00%  runtime.futex
         0     0% 99.00%      990ms 99.00%  main.main
";
        assert_eq!(render_top(&top, "minimum"), expected);
        let raw = render_top(&Top { duration_nanos: None, ..top }, "ns");
        assert!(
            raw.starts_with("Type: cpu\nShowing nodes accounting for 990000000ns, 99.00% of 1000000000ns total\n"),
            "{raw}"
        );
    }
}
