//! A KTAP reader for what the guest prints: our suites' own KTAP framed by
//! `# mnic-suite-begin/end` markers, and KUnit's nested KTAP inside the kernel log.

/// One test result line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// Dotted path of enclosing subtests (KUnit suite names), possibly empty.
    pub path: String,
    /// The test's name.
    pub name: String,
    /// `ok` (including `# SKIP`) or `not ok`.
    pub passed: bool,
    /// True for `# SKIP`.
    pub skipped: bool,
    /// Text after `#`, if any.
    pub directive: String,
    /// The suite's diagnostic lines (`# ...`) printed since its previous result, without `# `.
    pub notes: Vec<String>,
    /// Index of the result line in the console (as `str::lines` counts).
    pub line: usize,
}

/// A suite's framed output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suite {
    /// Name from the begin marker.
    pub name: String,
    /// Exit status from the end marker; `None` if the suite never ended.
    pub rc: Option<i32>,
    /// Result lines in order.
    pub cases: Vec<Case>,
    /// Every line between the markers (for failure messages).
    pub output: Vec<String>,
    /// Console line index of the begin marker.
    pub begin_line: usize,
    /// Console line index of the end marker, if the suite ended.
    pub end_line: Option<usize>,
}

/// Removes the printk timestamp prefix (`[    1.234567] `) if present.
pub fn strip_printk(line: &str) -> &str {
    let t = line.trim_end_matches('\r');
    if let Some(rest) = t.strip_prefix('[') {
        if let Some(end) = rest.find("] ") {
            let stamp = &rest[..end];
            if stamp.trim().chars().all(|c| c.is_ascii_digit() || c == '.') {
                return &rest[end + 2..];
            }
        }
    }
    t
}

/// Parses `ok N name # directive` / `not ok N name` (after indentation).
pub fn parse_result(line: &str) -> Option<(bool, String, String)> {
    let l = line.trim_start();
    let (passed, rest) = if let Some(r) = l.strip_prefix("not ok ") {
        (false, r)
    } else if let Some(r) = l.strip_prefix("ok ") {
        (true, r)
    } else {
        return None;
    };
    let (num, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    num.parse::<u32>().ok()?;
    let (name, directive) = match rest.split_once(" # ") {
        Some((n, d)) => (n.trim(), d.trim()),
        None => match rest.strip_prefix("- ") {
            Some(n) => (n.trim(), ""),
            None => (rest.trim(), ""),
        },
    };
    Some((
        passed,
        name.trim_start_matches("- ").to_string(),
        directive.to_string(),
    ))
}

fn is_skip(directive: &str) -> bool {
    directive.to_ascii_uppercase().starts_with("SKIP")
}

/// Splits console output into framed suites.
pub fn suites(console: &str) -> Vec<Suite> {
    let mut out = Vec::new();
    let mut cur: Option<Suite> = None;
    let mut notes: Vec<String> = Vec::new();
    for (index, raw) in console.lines().enumerate() {
        let line = strip_printk(raw);
        if let Some(name) = line.strip_prefix("# mnic-suite-begin ") {
            if let Some(s) = cur.take() {
                out.push(s);
            }
            notes.clear();
            cur = Some(Suite {
                name: name.trim().to_string(),
                rc: None,
                cases: Vec::new(),
                output: Vec::new(),
                begin_line: index,
                end_line: None,
            });
            continue;
        }
        if let Some(rest) = line.strip_prefix("# mnic-suite-end ") {
            if let Some(mut s) = cur.take() {
                s.rc = rest
                    .rsplit_once("rc=")
                    .and_then(|(_, n)| n.trim().parse().ok());
                s.end_line = Some(index);
                out.push(s);
            }
            continue;
        }
        if let Some(s) = cur.as_mut() {
            s.output.push(line.to_string());
            // Only top-level lines of the suite's own KTAP: kernel messages carry a timestamp.
            if raw != line || line.starts_with(' ') {
                continue;
            }
            if let Some(note) = line.strip_prefix("# ") {
                notes.push(note.trim_end().to_string());
            } else if let Some((passed, name, directive)) = parse_result(line) {
                let skipped = passed && is_skip(&directive);
                s.cases.push(Case {
                    path: String::new(),
                    name,
                    passed,
                    skipped,
                    directive,
                    notes: std::mem::take(&mut notes),
                    line: index,
                });
            }
        }
    }
    if let Some(s) = cur.take() {
        out.push(s);
    }
    out
}

/// KUnit results in the kernel log: leaf cases with their suite as `path`.
/// A suite's own summary line (`ok 1 suite_name`) is not repeated as a case.
pub fn kunit_cases(console: &str) -> Vec<Case> {
    let mut out = Vec::new();
    let mut suite_stack: Vec<(usize, String)> = Vec::new();
    for (index, raw) in console.lines().enumerate() {
        let line = strip_printk(raw);
        if raw == line {
            continue; // KUnit output always comes through printk
        }
        let indent = line.len() - line.trim_start().len();
        let t = line.trim_start();
        if let Some(name) = t.strip_prefix("# Subtest: ") {
            suite_stack.retain(|(i, _)| *i < indent);
            suite_stack.push((indent, name.trim().to_string()));
            continue;
        }
        if let Some((passed, name, directive)) = parse_result(line) {
            // A suite's own result line sits one level out from its "# Subtest:" header,
            // and closes it.
            if let Some(pos) = suite_stack
                .iter()
                .position(|(i, n)| *i > indent && *n == name)
            {
                suite_stack.truncate(pos);
                continue;
            }
            suite_stack.retain(|(i, _)| *i <= indent);
            let path = suite_stack
                .iter()
                .map(|(_, n)| n.as_str())
                .collect::<Vec<_>>()
                .join(".");
            if path.is_empty() {
                continue;
            }
            let skipped = passed && is_skip(&directive);
            out.push(Case {
                path,
                name,
                passed,
                skipped,
                directive,
                notes: Vec::new(),
                line: index,
            });
        }
    }
    out
}

/// Kernel log lines that mean something went wrong in the kernel.
pub fn kernel_problems(console: &str) -> Vec<String> {
    const BAD: [&str; 9] = [
        "WARNING:",
        // Page poisoning (debug kernel): something wrote into a freed page.
        "memory corruption",
        "BUG:",
        "Oops",
        "Kernel panic",
        "Call Trace:",
        "general protection fault",
        "UBSAN:",
        "possible circular locking",
    ];
    console
        .lines()
        .filter(|raw| strip_printk(raw) != *raw)
        .filter(|raw| BAD.iter().any(|b| raw.contains(b)))
        .map(|s| s.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framed_suites_are_split_and_counted() {
        let console = "noise\n# mnic-suite-begin a\nKTAP version 1\n1..2\nok 1 first\n[    1.0] ok 9 kernel noise\nnot ok 2 second # boom\n# mnic-suite-end a rc=1\n# mnic-suite-begin b\nok 1 x # SKIP no swap\n";
        let s = suites(console);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].name, "a");
        assert_eq!(s[0].rc, Some(1));
        assert_eq!(
            s[0].cases.len(),
            2,
            "timestamped kernel lines are not suite results"
        );
        assert!(s[0].cases[0].passed);
        assert!(!s[0].cases[1].passed);
        assert_eq!(s[0].cases[1].directive, "boom");
        assert_eq!(
            s[1].rc, None,
            "a suite without an end marker never finished"
        );
        assert!(s[1].cases[0].skipped);
        assert_eq!((s[0].begin_line, s[0].end_line), (1, Some(7)));
        assert_eq!(s[0].cases[1].line, 6);
    }

    #[test]
    fn diagnostics_belong_to_the_next_result() {
        let console = "# mnic-suite-begin m\n1..2\n# 5 faults\n[    1.0] # kernel says\n# a: 0.1 s\nok 1 a\nok 2 b\n# 2 passed\n# mnic-suite-end m rc=0\n";
        let s = suites(console);
        assert_eq!(s[0].cases[0].notes, ["5 faults", "a: 0.1 s"]);
        assert!(s[0].cases[1].notes.is_empty());
    }

    #[test]
    fn kunit_nesting_gives_suite_paths() {
        let console = "[    0.5] KTAP version 1\n[    0.5] 1..1\n[    0.5]     KTAP version 1\n[    0.5]     # Subtest: rust_doctests_kernel\n[    0.5]     1..2\n[    0.6]     ok 1 rust_doctest_a\n[    0.6]     not ok 2 rust_doctest_b\n[    0.7] # rust_doctests_kernel: pass:1 fail:1\n[    0.7] not ok 1 rust_doctests_kernel\n";
        let c = kunit_cases(console);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].path, "rust_doctests_kernel");
        assert_eq!(c[0].name, "rust_doctest_a");
        assert!(c[0].passed);
        assert!(!c[1].passed);
    }

    #[test]
    fn result_lines_parse_with_and_without_dash() {
        assert_eq!(
            parse_result("ok 3 - name"),
            Some((true, "name".into(), String::new()))
        );
        assert_eq!(
            parse_result("not ok 12 name # why"),
            Some((false, "name".into(), "why".into()))
        );
        assert_eq!(parse_result("okay 1 x"), None);
        assert_eq!(parse_result("ok x y"), None);
    }

    #[test]
    fn kernel_problems_come_only_from_printk_lines() {
        let console = "[    2.0] WARNING: CPU: 0 PID: 1 at mm/x.c:1\nuser says WARNING: fine\n";
        assert_eq!(kernel_problems(console).len(), 1);
    }
}
