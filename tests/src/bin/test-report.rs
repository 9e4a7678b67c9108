//! `test-report`: records the host tests' results and writes the generated blocks of
//! `docs/testing.md` from the run records (see docs/testing.md, "Results").
//!
//! ```text
//! test-report host --log LOG --exit-status N --seconds S --out host.json
//! test-report test-block --doc MD --host host.json --guest guest.json [--allow-partial]
//! test-report soak-block --doc MD --target soak|soak-debug --guest soak.json [--allow-partial]
//! ```

use anyhow::{bail, Context, Result};
use mnic_tests::record::{self, GuestRun, HostRun};
use mnic_tests::{docblock, hostlog, provenance::Provenance, report};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// `--name value` options and `--flag`s.
struct Opts {
    values: HashMap<String, String>,
    flags: Vec<String>,
}

impl Opts {
    fn parse(args: &[String]) -> Result<Self> {
        let mut values = HashMap::new();
        let mut flags = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let Some(name) = a.strip_prefix("--") else {
                bail!("unexpected argument '{a}'");
            };
            if name == "allow-partial" {
                flags.push(name.to_string());
                continue;
            }
            let v = it
                .next()
                .with_context(|| format!("--{name} needs a value"))?;
            values.insert(name.to_string(), v.clone());
        }
        Ok(Self { values, flags })
    }

    fn get(&self, name: &str) -> Result<&str> {
        self.values
            .get(name)
            .map(String::as_str)
            .with_context(|| format!("--{name} is required"))
    }

    fn path(&self, name: &str) -> Result<PathBuf> {
        self.get(name).map(PathBuf::from)
    }

    fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }
}

fn host(o: &Opts) -> Result<()> {
    let log = o.path("log")?;
    let text =
        std::fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?;
    let seconds: f64 = o.get("seconds")?.parse().context("--seconds")?;
    let mut provenance = Provenance::now(Path::new("."));
    provenance.started_unix = provenance.started_unix.saturating_sub(seconds as u64);
    provenance.started = mnic_tests::provenance::utc_minutes(provenance.started_unix);
    let run = HostRun {
        provenance,
        exit_status: o.get("exit-status")?.parse().context("--exit-status")?,
        seconds,
        binaries: hostlog::parse(&text),
    };
    let out = o.path("out")?;
    record::save(&out, &run)?;
    let t = run.tally();
    eprintln!(
        "test-report: host tests: {} passed, {} failed, {} skipped in {} binaries -> {}",
        t.passed,
        t.failed,
        t.skipped,
        run.binaries.len(),
        out.display()
    );
    Ok(())
}

fn rewrite(doc: &Path, block: &str, body: &str) -> Result<()> {
    let text =
        std::fs::read_to_string(doc).with_context(|| format!("reading {}", doc.display()))?;
    let new =
        docblock::replace(&text, block, body).with_context(|| format!("in {}", doc.display()))?;
    if new != text {
        std::fs::write(doc, new).with_context(|| format!("writing {}", doc.display()))?;
    }
    eprintln!("test-report: {}: block '{block}' written", doc.display());
    Ok(())
}

fn run(args: &[String]) -> Result<()> {
    let (cmd, rest) = args
        .split_first()
        .context("usage: test-report host|test-block|soak-block --option value ...")?;
    let o = Opts::parse(rest)?;
    match cmd.as_str() {
        "host" => host(&o),
        "test-block" => {
            let host: HostRun = record::load(&o.path("host")?)?;
            let guest: GuestRun = record::load(&o.path("guest")?)?;
            let body = report::test_block(&host, &guest, o.flag("allow-partial"))?;
            rewrite(&o.path("doc")?, "test", &body)
        }
        "soak-block" => {
            let target = o.get("target")?;
            if !matches!(target, "soak" | "soak-debug") {
                bail!("--target must be soak or soak-debug, not '{target}'");
            }
            let guest: GuestRun = record::load(&o.path("guest")?)?;
            let body = report::soak_block(&guest, target, o.flag("allow-partial"))?;
            rewrite(&o.path("doc")?, target, &body)
        }
        other => bail!("unknown command '{other}' (host, test-block, soak-block)"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        eprintln!("test-report: {e:#}");
        std::process::exit(1);
    }
}
