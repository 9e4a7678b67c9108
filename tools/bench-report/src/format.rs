//! How numbers and sizes are written in the report.

use crate::svg;

/// Bytes as "4 KiB", "1 MiB", "1 GiB".
pub fn human(n: u64) -> String {
    svg::tick_label(n as f64, true)
        .replace('K', " KiB")
        .replace('M', " MiB")
        .replace('G', " GiB")
}

/// A measured value with as many digits as it deserves; "n/a" if missing or not finite.
pub fn f(v: Option<f64>) -> String {
    match v {
        None => "n/a".into(),
        Some(v) if !v.is_finite() => "n/a".into(),
        Some(0.0) => "0".into(),
        Some(v) if v.abs() >= 1000.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) if v.abs() >= 0.1 => format!("{v:.2}"),
        Some(v) => format!("{v:.3}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_format() {
        assert_eq!(f(None), "n/a");
        assert_eq!(f(Some(1234.5)), "1234");
        assert_eq!(f(Some(0.5)), "0.50");
        assert_eq!(human(1 << 30), "1 GiB");
    }
}
