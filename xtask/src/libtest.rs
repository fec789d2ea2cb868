//! Reading libtest's output (`test NAME ... ok`) into counts, for host and VM runs alike.
use crate::vm;

/// Tally of test outcomes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    pub passed: u32,
    pub failed: u32,
    pub ignored: u32,
    /// One line per failure: the failing test, or the step that could not run.
    pub failures: Vec<String>,
}

impl Tally {
    pub fn add(&mut self, other: Tally) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
        self.failures.extend(other.failures);
    }

    /// Records a failure that is not a single test: a build, a check, a VM that did not boot.
    pub fn fail(&mut self, what: impl Into<String>) {
        self.failed += 1;
        self.failures.push(what.into());
    }
}

/// Counts the `test NAME ... RESULT` lines of libtest output.
pub fn parse(output: &str, context: &str) -> Tally {
    let mut tally = Tally::default();
    for line in output.lines() {
        let Some(rest) = line.strip_prefix("test ") else {
            continue;
        };
        let Some((name, result)) = rest.rsplit_once(" ... ") else {
            continue;
        };
        match result.split([' ', ',']).next() {
            Some("ok") => tally.passed += 1,
            Some("FAILED") => {
                tally.failed += 1;
                tally.failures.push(format!("{context}: {name}"));
            }
            Some("ignored") => tally.ignored += 1,
            _ => {}
        }
    }
    tally
}

/// Counts a VM run's results, treating every test binary that did not run to completion (and a
/// VM that did not finish) as a failure of its own.
pub fn parse_vm(results: &str, context: &str) -> Tally {
    let mut tally = Tally::default();
    let mut current: Option<(String, String)> = None;
    let mut binaries = 0;
    for line in results.lines() {
        if let Some(name) = line.strip_prefix(vm::BIN_START).map(str::trim) {
            if let Some((unfinished, _)) = current.take() {
                tally.fail(format!(
                    "{context}: test binary {unfinished} did not finish"
                ));
            }
            binaries += 1;
            current = Some((name.to_owned(), String::new()));
        } else if let Some(rest) = line.strip_prefix(vm::BIN_EXIT) {
            let mut parts = rest.split_whitespace();
            let (name, status) = (parts.next().unwrap_or("?"), parts.next().unwrap_or("?"));
            let Some((_, output)) = current.take() else {
                continue;
            };
            let bin = parse(&output, &format!("{context}: {name}"));
            if status != "0" && bin.failed == 0 {
                tally.fail(format!("{context}: test binary {name} exited with status {status} without a failing test"));
            }
            tally.add(bin);
        } else if let Some((_, output)) = current.as_mut() {
            output.push_str(line);
            output.push('\n');
        }
    }
    if let Some((unfinished, _)) = current {
        tally.fail(format!(
            "{context}: test binary {unfinished} did not finish"
        ));
    }
    if binaries == 0 {
        tally.fail(format!("{context}: no test binary ran"));
    }
    if !results.contains(vm::DONE) {
        tally.fail(format!("{context}: the VM did not run to the end"));
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    const BINARY_OUTPUT: &str = "running 3 tests\n\
        test exec::denied ... ok\n\
        test exec::outside ... FAILED\n\
        test exec::slow ... ignored, needs a VM\n\
        test result: FAILED. 1 passed; 1 failed; 1 ignored\n";

    #[test]
    fn counts_each_outcome() {
        let tally = parse(BINARY_OUTPUT, "host");
        assert_eq!((tally.passed, tally.failed, tally.ignored), (1, 1, 1));
        assert_eq!(tally.failures, ["host: exec::outside"]);
    }

    #[test]
    fn vm_run_counts_tests_and_missing_pieces() {
        let good = format!(
            "JIT-VM-BOOTED 6.1\nJIT-BIN-START a\n{BINARY_OUTPUT}JIT-BIN-EXIT a 101\nJIT-VM-DONE\n"
        );
        let tally = parse_vm(&good, "6.1");
        assert_eq!((tally.passed, tally.failed), (1, 1));

        let crashed = "JIT-BIN-START a\ntest x ... ok\nJIT-BIN-EXIT a 139\nJIT-VM-DONE\n";
        let tally = parse_vm(crashed, "6.1");
        assert_eq!((tally.passed, tally.failed), (1, 1), "{tally:?}");

        let cut_short = "JIT-BIN-START a\ntest x ... ok\n";
        let tally = parse_vm(cut_short, "6.1");
        assert_eq!((tally.passed, tally.failed), (0, 2), "{tally:?}");

        let nothing = parse_vm("", "6.1");
        assert_eq!(nothing.failed, 2);
    }
}
