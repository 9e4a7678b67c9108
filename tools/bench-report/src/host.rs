//! The host half: criterion's estimates of the device-model benches.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// Criterion results: benchmark id ("group/function[/param]") -> median ns per iteration.
pub type Host = BTreeMap<String, f64>;

/// The part of criterion's `new/benchmark.json` read here.
#[derive(Deserialize)]
struct BenchmarkId {
    full_id: String,
}

/// The part of criterion's `new/estimates.json` read here.
#[derive(Deserialize)]
struct Estimates {
    median: Estimate,
}

#[derive(Deserialize)]
struct Estimate {
    point_estimate: f64,
}

/// Reads a criterion JSON file, or `None` if it is missing or of another shape.
fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// Every `*/new/estimates.json` under `dir`: the median point estimate in ns.
pub fn read_criterion(dir: &Path) -> Host {
    let mut host = Host::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() && p.file_name().is_some_and(|n| n != "report") {
                stack.push(p);
            } else if p.ends_with("new/estimates.json") {
                let bench = p.parent().and_then(Path::parent);
                let id =
                    bench.and_then(|b| read_json::<BenchmarkId>(&b.join("new/benchmark.json")));
                let est = read_json::<Estimates>(&p);
                if let (Some(id), Some(est)) = (id, est) {
                    host.insert(id.full_id, est.median.point_estimate);
                }
            }
        }
    }
    host
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_medians_by_full_id() {
        let dir = std::env::temp_dir().join(format!("mnic-bench-host-{}", std::process::id()));
        let new = dir.join("translate/tlb_hit/new");
        std::fs::create_dir_all(&new).unwrap();
        std::fs::write(
            new.join("benchmark.json"),
            r#"{"full_id":"translate/tlb_hit","x":1}"#,
        )
        .unwrap();
        std::fs::write(
            new.join("estimates.json"),
            r#"{"mean":{"point_estimate":5.0},"median":{"point_estimate":4.5}}"#,
        )
        .unwrap();
        let host = read_criterion(&dir);
        assert_eq!(host.get("translate/tlb_hit"), Some(&4.5));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
