//! The bench's output: one `bench <op>/<case> median_ns=<n> ratio=<r>` line per op and case
//! (what `cargo xtask bench` and scripts read), then a table for people.
use std::fmt::Write as _;

use jit_common::{event::counter, policy::Decision};

use crate::{Case, Settings, ops::OPS};

/// The middle of the values (the mean of the two middle ones for an even count).
fn median(values: &[u64]) -> u64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let mid = sorted.len() / 2;
    match sorted.len() {
        0 => 0,
        n if n.is_multiple_of(2) => u64::midpoint(sorted[mid - 1], sorted[mid]),
        _ => sorted[mid],
    }
}

/// `n / base` with two decimals, computed in integers.
fn ratio(n: u64, base: u64) -> String {
    let base = u128::from(base.max(1));
    let hundredths = (u128::from(n) * 100 + base / 2) / base;
    format!("{}.{:02}", hundredths / 100, hundredths % 100)
}

/// A duration in ns, readably: `812.3 us`, `15.2 us`, `950 ns`.
fn human(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns} ns"),
        1_000..1_000_000 => format!("{}.{} us", ns / 1_000, ns % 1_000 / 100),
        _ => format!("{}.{:02} ms", ns / 1_000_000, ns % 1_000_000 / 10_000),
    }
}

/// Prints the `bench` lines, then the table. `cases[0]` is `none`, the base of the ratios.
pub fn print(cases: &[Case], settings: &Settings) {
    print!("{}", render(cases, settings));
}

/// A `bench` line: what `cargo xtask bench` and scripts read.
pub fn line(op: &str, case: &str, ns: u64, base: u64) -> String {
    format!("bench {op}/{case} median_ns={ns} ratio={}", ratio(ns, base))
}

/// The median over the repetitions of a case's op; `None` without repetitions.
pub fn median_of(case: &Case, op: usize) -> Option<u64> {
    let values = &case.ns[op];
    (!values.is_empty()).then(|| median(values))
}

fn render(cases: &[Case], settings: &Settings) -> String {
    let mut lines = String::new();
    let mut table = format!(
        "\n{:<6} {:<21} {:>11} {:>6} {:>12} {:>12}\n",
        "op", "case", "median", "ratio", "fastest rep", "slowest rep"
    );
    for (index, op) in OPS.iter().enumerate() {
        let base = median(&cases[0].ns[index]);
        for case in cases {
            let values = &case.ns[index];
            let m = median(values);
            let (op, case, ratio) = (op.name(), case.name, ratio(m, base));
            let _ = writeln!(lines, "{}", line(op, case, m, base));
            let _ = writeln!(
                table,
                "{op:<6} {case:<21} {:>11} {ratio:>6} {:>12} {:>12}",
                human(m),
                human(values.iter().copied().min().unwrap_or_default()),
                human(values.iter().copied().max().unwrap_or_default()),
            );
        }
    }
    let iters: Vec<String> = OPS
        .iter()
        .zip(settings.iters)
        .map(|(op, n)| format!("{n} {}", op.name()))
        .collect();
    let _ = writeln!(
        table,
        "(per iteration, median over {} rounds of {} per case; ratio to `none`)",
        settings.reps,
        iters.join(", "),
    );
    let _ = writeln!(
        table,
        "\ndecisions jit counted during each case (the checks and the warm-up included):"
    );
    for case in cases {
        let Some(d) = &case.decisions else { continue };
        let count = |decision: Decision| d.get(counter::DECISION_BASE + decision as u32);
        let _ = write!(
            table,
            "  {:<21} allow {:>6} (cached {:>6})  audit {}  hold {}  deny {}  errors {}",
            case.name,
            count(Decision::Allow),
            d.get(counter::CACHE_HITS),
            count(Decision::Audit),
            count(Decision::Hold),
            count(Decision::Deny),
            d.get(counter::ERRORS),
        );
        let _ = if d.allowed() == 0 {
            writeln!(table)
        } else {
            writeln!(table, "  = {} expected", d.expected.iter().sum::<u64>())
        };
    }
    format!("{lines}{table}")
}
