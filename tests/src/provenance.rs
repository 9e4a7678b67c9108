//! When a run started and on which tree: the UTC time, the git commit and whether tracked
//! files had uncommitted changes. Without git (a tarball) the commit is unknown.

use serde::{Deserialize, Serialize};
use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

/// Where a record comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// Start of the run, seconds since the Unix epoch.
    pub started_unix: u64,
    /// The same as `YYYY-MM-DD HH:MM UTC`.
    pub started: String,
    /// `git rev-parse --short HEAD`, if the tree is a git checkout.
    pub commit: Option<String>,
    /// Whether tracked files differed from that commit (untracked files are not counted).
    pub dirty: Option<bool>,
}

impl Provenance {
    /// Now, for the checkout at `repo`.
    pub fn now(repo: &Path) -> Self {
        let started_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let commit = git(repo, &["rev-parse", "--short", "HEAD"]);
        let dirty = commit.as_ref().and_then(|_| {
            git(repo, &["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty())
        });
        Self {
            started_unix,
            started: utc_minutes(started_unix),
            commit,
            dirty,
        }
    }

    /// `abc1234`, `abc1234 (uncommitted changes)` or `unknown`.
    pub fn tree(&self) -> String {
        match (&self.commit, self.dirty) {
            (Some(c), Some(true)) => format!("`{c}` (with uncommitted changes)"),
            (Some(c), _) => format!("`{c}`"),
            (None, _) => "unknown (not a git checkout)".to_string(),
        }
    }
}

fn git(repo: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Formats Unix seconds as `YYYY-MM-DD HH:MM UTC`.
pub fn utc_minutes(unix: u64) -> String {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    let (y, m, d) = civil_date(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60
    )
}

/// Gregorian (year, month, day) of a day count since 1970-01-01: count 400-year eras of
/// 146 097 days from 0000-03-01, so that the leap day ends each year of the count.
fn civil_date(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = z / 146_097;
    let doe = z % 146_097; // day of era
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year, from March 1
    let mp = (5 * doy + 2) / 153; // month from March = 0
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_gregorian_utc() {
        assert_eq!(utc_minutes(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_minutes(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc_minutes(1_709_251_199), "2024-02-29 23:59 UTC");
        assert_eq!(
            utc_minutes(1_798_675_200 + 3 * 3600 + 60),
            "2026-12-31 03:01 UTC"
        );
    }

    #[test]
    fn tree_says_when_it_is_unknown_or_dirty() {
        let mut p = Provenance {
            started_unix: 0,
            started: String::new(),
            commit: Some("abc1234".into()),
            dirty: Some(true),
        };
        assert!(p.tree().contains("uncommitted"));
        p.commit = None;
        assert!(p.tree().starts_with("unknown"));
    }
}
