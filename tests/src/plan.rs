//! The guest test plan: which VM boots run which suites (see `tests/suites.txt`).

use anyhow::{bail, Context, Result};

/// One VM boot and what runs in it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Boot {
    /// Name used in test names.
    pub name: String,
    /// Extra `mnic-vm run` arguments.
    pub vm_args: Vec<String>,
    /// Commands that must succeed before the suites (e.g. loading the driver).
    pub setup: Vec<String>,
    /// (suite name, shell command).
    pub suites: Vec<(String, String)>,
    /// Whether KUnit results of this boot are tests.
    pub kunit: bool,
}

impl Boot {
    /// The job the guest runs: the setup as a suite of its own, then every suite, each
    /// framed for the host by `run-suites.sh`.
    pub fn guest_job(&self) -> String {
        let mut job = String::from("sh /usr/share/mnic/run-suites.sh");
        if !self.setup.is_empty() {
            let setup = self.setup.join(" && ");
            job.push_str(&format!(" 'setup=echo 1..1; if {setup}; then echo ok 1 setup; else echo not ok 1 setup; exit 1; fi'"));
        }
        for (name, cmd) in &self.suites {
            job.push_str(&format!(" '{name}={}'", cmd.replace('\'', r"'\''")));
        }
        job
    }

    /// Whether a cargo test filter can select a test of this boot (its tests are named
    /// `BOOT/SUITE/CASE`), so that a filtered run boots no guest it does not need: a filter
    /// with a `/` names the boot before it; one without is the start of the boot's name
    /// (`fabric-two` selects no `fabric` boot, `fabric/` no `fabric-two`).
    pub fn selected_by(&self, filter: &str) -> bool {
        match filter.split_once('/') {
            Some((boot, _)) => boot == self.name,
            None => self.name.starts_with(filter),
        }
    }
}

/// Parses the plan text.
pub fn parse(text: &str) -> Result<Vec<Boot>> {
    let mut boots: Vec<Boot> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let ctx = || format!("suites.txt line {}", n + 1);
        let find = |boots: &mut Vec<Boot>, name: &str| -> Result<usize> {
            boots
                .iter()
                .position(|b| b.name == name)
                .with_context(|| format!("{}: unknown boot '{name}'", ctx()))
        };
        match words.as_slice() {
            ["boot", name, args @ ..] => {
                if boots.iter().any(|b| b.name == *name) {
                    bail!("{}: boot '{name}' defined twice", ctx());
                }
                boots.push(Boot {
                    name: name.to_string(),
                    vm_args: args.iter().map(|s| s.to_string()).collect(),
                    ..Default::default()
                });
            }
            ["setup", name, cmd @ ..] if !cmd.is_empty() => {
                let i = find(&mut boots, name)?;
                boots[i].setup.push(cmd.join(" "));
            }
            ["suite", name, suite, cmd @ ..] if !cmd.is_empty() => {
                let i = find(&mut boots, name)?;
                boots[i].suites.push((suite.to_string(), cmd.join(" ")));
            }
            ["kunit", name] => {
                let i = find(&mut boots, name)?;
                boots[i].kunit = true;
            }
            _ => bail!("{}: cannot read '{line}'", ctx()),
        }
    }
    Ok(boots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_lines_build_boots() {
        let p = parse("# c\nboot main --strict\nsetup main insmod a.ko\nsuite main s1 /usr/bin/t --x\nkunit main\n").unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].vm_args, ["--strict"]);
        assert_eq!(
            p[0].suites,
            [("s1".to_string(), "/usr/bin/t --x".to_string())]
        );
        assert!(p[0].kunit);
        assert!(p[0]
            .guest_job()
            .contains("'setup=echo 1..1; if insmod a.ko;"));
    }

    #[test]
    fn filters_select_boots_by_name() {
        let p = parse("boot fabric --fabric\nboot fabric-two --fabric --peer-cmd p.sh\n").unwrap();
        let picked = |f: &str| -> Vec<&str> {
            p.iter()
                .filter(|b| b.selected_by(f))
                .map(|b| b.name.as_str())
                .collect()
        };
        assert_eq!(picked("fabric-two"), ["fabric-two"]);
        assert_eq!(picked("fabric-two/"), ["fabric-two"]);
        assert_eq!(picked("fabric/fabric/put_get_sizes"), ["fabric"]);
        assert_eq!(picked("fabric/"), ["fabric"]);
        assert_eq!(picked("fab"), ["fabric", "fabric-two"]);
        assert!(picked("main").is_empty());
    }

    #[test]
    fn plan_errors_name_the_line() {
        let e = parse("suite nope s cmd\n").unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
        assert!(parse("boot a\nboot a\n").is_err());
        assert!(parse("frobnicate\n").is_err());
    }
}
