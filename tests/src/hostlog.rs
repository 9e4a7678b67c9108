//! Reads the text cargo and libtest print for the host tests (`make test-host` keeps it in
//! `target/mnic-test-results/host.log`): one [`HostBinary`] per `Running` / `Doc-tests`
//! header, counted from its `test result:` line. Criterion benches run in test mode print
//! `Testing NAME` and `Success` instead; each `Success` counts as passed, and a `Testing`
//! without one as failed. (libtest's JSON output needs a nightly flag, hence the text.)

use crate::record::{HostBinary, Tally};

fn header(line: &str) -> Option<String> {
    let t = line.trim();
    if let Some(krate) = t.strip_prefix("Doc-tests ") {
        return Some(format!("{} (doc-tests)", krate.trim()));
    }
    let rest = t.strip_prefix("Running ")?;
    // `unittests src/lib.rs (target/debug/deps/mnic_abi-0123abcd)`
    let (source, path) = rest.rsplit_once(" (")?;
    let file = path.trim_end_matches(')').rsplit('/').next()?;
    let stem = match file.rsplit_once('-') {
        Some((s, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => s,
        _ => file,
    };
    Some(format!("{stem} ({source})"))
}

fn count(summary: &str, word: &str) -> Option<u64> {
    summary.split(';').find_map(|part| {
        let (n, w) = part.trim().split_once(' ')?;
        (w.trim() == word).then(|| n.parse().ok())?
    })
}

/// `test result: ok. 5 passed; 0 failed; 1 ignored; ...` → counts.
fn summary(line: &str) -> Option<Tally> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let (_, counts) = rest.split_once(". ")?;
    Some(Tally {
        passed: count(counts, "passed")?,
        failed: count(counts, "failed")?,
        skipped: count(counts, "ignored")?,
    })
}

/// Every test binary in the log, in order.
pub fn parse(log: &str) -> Vec<HostBinary> {
    let mut out: Vec<HostBinary> = Vec::new();
    let mut bench_pending = false;
    for line in log.lines() {
        if let Some(name) = header(line) {
            if let Some(b) = out.last_mut() {
                if bench_pending {
                    b.tally.failed += 1;
                }
            }
            bench_pending = false;
            out.push(HostBinary {
                name,
                tally: Tally::default(),
                failed_tests: Vec::new(),
                finished: false,
            });
            continue;
        }
        let Some(b) = out.last_mut() else { continue };
        let t = line.trim();
        if let Some(tally) = summary(t) {
            b.tally = tally;
            b.finished = true;
        } else if let Some(name) = t
            .strip_prefix("test ")
            .and_then(|r| r.strip_suffix(" ... FAILED"))
        {
            b.failed_tests.push(name.to_string());
        } else if t.starts_with("Testing ") && !b.finished {
            if bench_pending {
                b.tally.failed += 1;
            }
            bench_pending = true;
        } else if t == "Success" && bench_pending {
            b.tally.passed += 1;
            bench_pending = false;
        }
    }
    if let (Some(b), true) = (out.last_mut(), bench_pending) {
        b.tally.failed += 1;
    }
    // A bench binary has no summary line; it finished if every `Testing` got its `Success`.
    for b in &mut out {
        if !b.finished && b.tally.total() > 0 && b.tally.failed == 0 {
            b.finished = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "   Compiling x v0.1.0
     Running unittests src/lib.rs (target/debug/deps/mnic_abi-8ad11ca95fb8da4d)

running 2 tests
test a ... ok
test b ... FAILED

test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s

     Running tests/hostile_peer.rs (target/debug/deps/hostile_peer-f1dc06750411c9a6)
test result: ok. 7 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 11.42s

     Running benches/device.rs (target/debug/deps/device-3e9a2c590ad41d02)
Testing translate/tlb_hit
Success

Testing translate/walk
Success
   Doc-tests mnic
test result: ok. 7 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.25s
     Running unittests src/main.rs (target/debug/deps/mnic_vm-6cb82307a0e24166)
thread panicked
";

    #[test]
    fn binaries_are_named_and_counted() {
        let b = parse(LOG);
        let names: Vec<_> = b.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "mnic_abi (unittests src/lib.rs)",
                "hostile_peer (tests/hostile_peer.rs)",
                "device (benches/device.rs)",
                "mnic (doc-tests)",
                "mnic_vm (unittests src/main.rs)"
            ]
        );
        assert_eq!((b[0].tally.passed, b[0].tally.failed), (1, 1));
        assert_eq!(b[0].failed_tests, ["b"]);
        assert_eq!(b[1].tally.skipped, 2);
        assert_eq!((b[2].tally.passed, b[2].finished), (2, true));
        assert!(b[3].finished);
        assert!(!b[4].finished, "a binary without a summary did not finish");
    }

    #[test]
    fn a_bench_without_success_failed() {
        let b = parse("     Running benches/d.rs (target/debug/deps/d-0123)\nTesting x\nthread 'main' panicked\n");
        assert_eq!(b[0].tally.failed, 1);
        assert!(!b[0].finished);
    }
}
