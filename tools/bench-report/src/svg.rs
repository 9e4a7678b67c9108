//! Hand-written SVG charts: a log-log line chart and a grouped bar chart. No plotting
//! crate: two chart kinds do not justify a heavy dependency build on 2 cores.

use std::fmt::Write;

const W: f64 = 720.0;
const H: f64 = 420.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

/// One line of a line chart: (x, y) points, both positive.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn header(out: &mut String, title: &str) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>
"#,
        (LEFT + W - RIGHT) / 2.0,
        esc(title)
    );
}

/// Human label for a tick value.
pub fn tick_label(v: f64, bytes: bool) -> String {
    if bytes {
        const U: [&str; 5] = ["B", "K", "M", "G", "T"];
        let mut v = v;
        let mut u = 0;
        while v >= 1024.0 && u < U.len() - 1 {
            v /= 1024.0;
            u += 1;
        }
        return format!("{}{}", trim(v), U[u]);
    }
    if v >= 1e6 || (v > 0.0 && v < 1e-2) {
        format!("{v:.0e}")
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Decades (or powers of 4 for byte axes) covering `[lo, hi]`.
fn log_ticks(lo: f64, hi: f64, bytes: bool) -> Vec<f64> {
    let base: f64 = if bytes { 4.0 } else { 10.0 };
    let mut t = base.powf(lo.log(base).floor());
    let mut v = Vec::new();
    while t <= hi * 1.0001 {
        if t >= lo / 1.0001 {
            v.push(t);
        }
        t *= base;
    }
    if v.len() < 2 {
        v = vec![lo, hi];
    }
    v
}

/// A log-log line chart.
pub fn line_chart(
    title: &str,
    xlabel: &str,
    ylabel: &str,
    x_bytes: bool,
    series: &[Series],
) -> String {
    let pts: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|(x, y)| *x > 0.0 && *y > 0.0 && x.is_finite() && y.is_finite())
        .collect();
    let mut out = String::new();
    header(&mut out, title);
    if pts.is_empty() {
        out.push_str(r#"<text x="200" y="200">no data</text></svg>"#);
        return out;
    }
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in &pts {
        x0 = x0.min(*x);
        x1 = x1.max(*x);
        y0 = y0.min(*y);
        y1 = y1.max(*y);
    }
    // Pad the y range to whole decades, the x range a little.
    y0 = 10f64.powf(y0.log10().floor());
    y1 = 10f64.powf(y1.log10().ceil());
    if x1 <= x0 {
        x1 = x0 * 10.0;
    }
    if y1 <= y0 {
        y1 = y0 * 10.0;
    }
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let sx = |x: f64| LEFT + (x.ln() - x0.ln()) / (x1.ln() - x0.ln()) * pw;
    let sy = |y: f64| TOP + ph - (y.ln() - y0.ln()) / (y1.ln() - y0.ln()) * ph;
    axes(&mut out, xlabel, ylabel);
    for t in log_ticks(x0, x1, x_bytes) {
        let x = sx(t);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP + ph,
            TOP + ph + 16.0,
            tick_label(t, x_bytes)
        );
    }
    y_grid(&mut out, y0, y1, pw, sy);
    for (i, s) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let p: Vec<String> = s
            .points
            .iter()
            .filter(|(x, y)| *x > 0.0 && *y > 0.0)
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#,
            p.join(" ")
        );
        for xy in &p {
            let (x, y) = xy.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(out, r#"<circle cx="{x}" cy="{y}" r="3" fill="{c}"/>"#);
        }
        legend(&mut out, i, c, &s.name);
    }
    out.push_str("</svg>\n");
    out
}

/// Horizontal grid lines with their labels at the decades of the log y axis `[y0, y1]`
/// (`sy` maps a value to its pixel row; `pw` is the plot width).
fn y_grid(out: &mut String, y0: f64, y1: f64, pw: f64, sy: impl Fn(f64) -> f64) {
    for t in log_ticks(y0, y1, false) {
        let y = sy(t);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            y + 4.0,
            tick_label(t, false)
        );
    }
}

fn axes(out: &mut String, xlabel: &str, ylabel: &str) {
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>
<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>
<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"##,
        LEFT + pw / 2.0,
        H - 18.0,
        esc(xlabel),
        TOP + ph / 2.0,
        esc(ylabel)
    );
}

fn legend(out: &mut String, i: usize, color: &str, name: &str) {
    let x = W - RIGHT + 12.0;
    let y = TOP + 10.0 + 20.0 * i as f64;
    let _ = writeln!(
        out,
        r#"<rect x="{x}" y="{:.1}" width="12" height="12" fill="{color}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
        y - 10.0,
        x + 18.0,
        y,
        esc(name)
    );
}

/// A bar chart with a log y axis: one group per category, one bar per series.
pub fn bar_chart(
    title: &str,
    ylabel: &str,
    categories: &[String],
    series: &[(String, Vec<Option<f64>>)],
) -> String {
    let mut out = String::new();
    header(&mut out, title);
    let vals: Vec<f64> = series
        .iter()
        .flat_map(|(_, v)| v.iter().flatten().copied())
        .filter(|v| *v > 0.0 && v.is_finite())
        .collect();
    if vals.is_empty() || categories.is_empty() {
        out.push_str(r#"<text x="200" y="200">no data</text></svg>"#);
        return out;
    }
    let lo = vals.iter().copied().fold(f64::MAX, f64::min);
    let hi = vals.iter().copied().fold(f64::MIN, f64::max);
    let y0 = 10f64.powf(lo.log10().floor() - 0.0).min(lo / 2.0);
    let y0 = 10f64.powf(y0.log10().floor());
    let mut y1 = 10f64.powf(hi.log10().ceil());
    if y1 <= y0 {
        y1 = y0 * 10.0;
    }
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let sy = |y: f64| TOP + ph - (y.ln() - y0.ln()) / (y1.ln() - y0.ln()) * ph;
    axes(&mut out, "", ylabel);
    y_grid(&mut out, y0, y1, pw, sy);
    let gw = pw / categories.len() as f64;
    let bw = (gw * 0.8) / series.len().max(1) as f64;
    for (ci, cat) in categories.iter().enumerate() {
        let gx = LEFT + gw * ci as f64 + gw * 0.1;
        // Slanted, so long category names do not run into each other.
        let _ = writeln!(
            out,
            r#"<text transform="translate({:.1} {:.1}) rotate(-25)" text-anchor="end" font-size="10">{}</text>"#,
            gx + gw * 0.4,
            TOP + ph + 12.0,
            esc(cat)
        );
        for (si, (_, v)) in series.iter().enumerate() {
            let Some(val) = v.get(ci).copied().flatten().filter(|v| *v > 0.0) else {
                continue;
            };
            let y = sy(val);
            let _ = writeln!(
                out,
                r#"<rect x="{:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}</title></rect>"#,
                gx + bw * si as f64,
                (bw - 2.0).max(1.0),
                TOP + ph - y,
                COLORS[si % COLORS.len()],
                trim(val)
            );
        }
    }
    for (si, (name, _)) in series.iter().enumerate() {
        legend(&mut out, si, COLORS[si % COLORS.len()], name);
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_svg() {
        let s = line_chart(
            "t",
            "x",
            "y",
            true,
            &[Series {
                name: "a<b".into(),
                points: vec![(4096.0, 1.0), (1048576.0, 100.0)],
            }],
        );
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert!(s.contains("a&lt;b"));
        assert!(s.contains("polyline"));
        let b = bar_chart(
            "t",
            "y",
            &["c1".into(), "c2".into()],
            &[("s".into(), vec![Some(3.0), None])],
        );
        assert!(b.contains("<rect x="));
        assert!(line_chart("t", "x", "y", false, &[]).contains("no data"));
    }

    #[test]
    fn ticks() {
        assert_eq!(tick_label(1048576.0, true), "1M");
        assert_eq!(tick_label(0.5, false), "0.5");
        assert_eq!(
            log_ticks(1.0, 1000.0, false),
            vec![1.0, 10.0, 100.0, 1000.0]
        );
    }
}
