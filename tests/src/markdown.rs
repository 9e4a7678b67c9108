//! Small Markdown helpers for the generated blocks: table rows, cell escaping, durations
//! and thousands separators.

/// Text made safe for a table cell: no `|`, no HTML tags, no line breaks.
pub fn cell(text: &str) -> String {
    text.replace('|', "\\|")
        .replace('<', "&lt;")
        .replace('\n', " ")
}

/// One table row from its cells.
pub fn row<S: AsRef<str>>(cells: &[S]) -> String {
    let inner: Vec<&str> = cells.iter().map(|c| c.as_ref()).collect();
    format!("| {} |\n", inner.join(" | "))
}

/// A table header with its separator line.
pub fn header(cells: &[&str]) -> String {
    let sep: Vec<&str> = cells.iter().map(|_| "---").collect();
    row(cells) + &row(&sep)
}

/// `0.4 s`, `12 s`, `7 min 2 s`, `1 h 3 min`.
pub fn duration(secs: f64) -> String {
    if secs < 10.0 {
        return format!("{secs:.1} s");
    }
    let s = secs.round() as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits: Vec<char> = n.to_string().chars().rev().collect();
    let groups: Vec<String> = digits
        .chunks(3)
        .map(|g| g.iter().rev().collect())
        .rev()
        .collect();
    groups.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(duration(0.04), "0.0 s");
        assert_eq!(duration(9.94), "9.9 s");
        assert_eq!(duration(59.6), "1 min 0 s");
        assert_eq!(duration(482.0), "8 min 2 s");
        assert_eq!(duration(3720.0), "1 h 2 min");
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(270_265), "270,265");
        assert_eq!(thousands(21_800_000), "21,800,000");
        assert_eq!(cell("a | b <x>\nc"), "a \\| b &lt;x> c");
        assert_eq!(header(&["a", "b"]), "| a | b |\n| --- | --- |\n");
    }
}
