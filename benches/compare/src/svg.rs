//! Line charts as plain SVG text: axes with ticks (linear or decades), one polyline with
//! markers per series, a legend. No plotting dependency.

use std::fmt::Write as _;
use std::io;
use std::path::Path;

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Points (x, y), drawn in order.
    pub points: Vec<(f64, f64)>,
    /// Index into the palette (series that belong together share a colour).
    pub colour: usize,
    /// Drawn dashed.
    pub dashed: bool,
}

/// A chart.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Title above the plot.
    pub title: String,
    /// Label under the x axis.
    pub x_label: String,
    /// Label beside the y axis.
    pub y_label: String,
    /// Logarithmic x axis.
    pub log_x: bool,
    /// Logarithmic y axis.
    pub log_y: bool,
    /// The lines.
    pub series: Vec<Series>,
    /// x-axis ticks (value, label) to draw instead of the automatic ones, when not empty.
    pub x_ticks: Vec<(f64, String)>,
}

const WIDTH: f64 = 880.0;
const HEIGHT: f64 = 440.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 330.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 55.0;
/// Line colours.
const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// One axis: its range (in log10 units on a log axis) and ticks.
struct Axis {
    log: bool,
    lo: f64,
    hi: f64,
}

impl Axis {
    fn new(values: impl Iterator<Item = f64>, log: bool) -> Axis {
        let vals: Vec<f64> = values
            .filter(|v| v.is_finite() && (!log || *v > 0.0))
            .map(|v| if log { v.log10() } else { v })
            .collect();
        let (mut lo, mut hi) = vals
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        if !lo.is_finite() {
            (lo, hi) = (0.0, 1.0);
        }
        if log {
            lo = lo.floor();
            hi = hi.ceil();
            if hi <= lo {
                hi = lo + 1.0;
            }
        } else {
            if lo > 0.0 {
                lo = 0.0;
            }
            if hi <= lo {
                hi = lo + 1.0;
            }
            let step = nice_step((hi - lo) / 5.0);
            lo = (lo / step).floor() * step;
            hi = (hi / step).ceil() * step;
        }
        Axis { log, lo, hi }
    }

    /// Position in 0..=1 of value `v`, or `None` when it cannot be drawn.
    fn frac(&self, v: f64) -> Option<f64> {
        let v = if self.log {
            if v <= 0.0 {
                return None;
            }
            v.log10()
        } else {
            v
        };
        v.is_finite().then(|| (v - self.lo) / (self.hi - self.lo))
    }

    /// Tick values (in data units) and their labels.
    fn ticks(&self) -> Vec<(f64, String)> {
        if self.log {
            let mut t = Vec::new();
            let (lo, hi) = (self.lo as i32, self.hi as i32);
            for e in lo..=hi {
                let v = 10f64.powi(e);
                t.push((v, label(v)));
                if hi - lo <= 3 && e < hi {
                    for m in [2.0, 5.0] {
                        t.push((m * v, label(m * v)));
                    }
                }
            }
            t
        } else {
            let step = nice_step((self.hi - self.lo) / 5.0);
            let mut t = Vec::new();
            let mut v = self.lo;
            while v <= self.hi + step * 1e-9 {
                t.push((v, label(v)));
                v += step;
            }
            t
        }
    }
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * p)
}

/// A short tick label: 0.2, 5, 64, 1k, 64k, 2M.
fn label(v: f64) -> String {
    let a = v.abs();
    let (x, suffix) = if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let s = if (x - x.round()).abs() < 1e-9 {
        format!("{}", x.round())
    } else {
        format!("{x:.1}")
    };
    format!("{s}{suffix}")
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The chart as an SVG document.
pub fn render(c: &Chart) -> String {
    let all = || c.series.iter().flat_map(|s| s.points.iter());
    let xa = Axis::new(all().map(|p| p.0), c.log_x);
    let ya = Axis::new(all().map(|p| p.1), c.log_y);
    let pw = WIDTH - LEFT - RIGHT;
    let ph = HEIGHT - TOP - BOTTOM;
    let px = |f: f64| LEFT + f * pw;
    let py = |f: f64| TOP + (1.0 - f) * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
        LEFT + pw / 2.0,
        escape(&c.title)
    );
    let x_ticks = if c.x_ticks.is_empty() {
        xa.ticks()
    } else {
        c.x_ticks.clone()
    };
    for (v, text) in x_ticks {
        let Some(f) = xa.frac(v).filter(|f| (-1e-9..=1.0 + 1e-9).contains(f)) else {
            continue;
        };
        let x = px(f);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP + ph,
            TOP + ph + 16.0,
            escape(&text)
        );
    }
    for (v, text) in ya.ticks() {
        let Some(f) = ya.frac(v).filter(|f| (-1e-9..=1.0 + 1e-9).contains(f)) else {
            continue;
        };
        let y = py(f);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            y + 4.0,
            escape(&text)
        );
    }
    let _ = writeln!(
        s,
        r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        LEFT + pw / 2.0,
        HEIGHT - 12.0,
        escape(&c.x_label)
    );
    let _ = writeln!(
        s,
        r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">{}</text>"#,
        TOP + ph / 2.0,
        TOP + ph / 2.0,
        escape(&c.y_label)
    );
    for (i, series) in c.series.iter().enumerate() {
        let colour = COLOURS[series.colour % COLOURS.len()];
        let dash = if series.dashed {
            r#" stroke-dasharray="6 3""#
        } else {
            ""
        };
        let pts: Vec<(f64, f64)> = series
            .points
            .iter()
            .filter_map(|&(x, y)| Some((px(xa.frac(x)?), py(ya.frac(y)?))))
            .collect();
        let path: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2"{dash} points="{}"/>"#,
            path.join(" ")
        );
        if pts.len() <= 24 {
            for (x, y) in &pts {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="{colour}"/>"#
                );
            }
        }
        let ly = TOP + 10.0 + 20.0 * i as f64;
        let lx = LEFT + pw + 14.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="2"{dash}/><text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 22.0,
            lx + 28.0,
            ly + 4.0,
            escape(&series.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Renders `chart` into `path`, creating its directory.
pub fn write(path: &Path, chart: &Chart) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, render(chart))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(log: bool) -> Chart {
        Chart {
            title: "a < b".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            log_x: log,
            log_y: log,
            series: vec![
                Series {
                    name: "one".into(),
                    points: vec![(64.0, 3.0), (65536.0, 3000.0)],
                    colour: 0,
                    dashed: false,
                },
                Series {
                    name: "two & more".into(),
                    points: vec![(64.0, 1.0), (1024.0, 0.0), (65536.0, 2.0)],
                    colour: 0,
                    dashed: true,
                },
            ],
            x_ticks: Vec::new(),
        }
    }

    #[test]
    fn renders_every_series_with_a_legend_and_escapes_text() {
        let s = render(&chart(true));
        assert!(s.starts_with("<svg ") && s.ends_with("</svg>\n"));
        assert_eq!(s.matches("<polyline").count(), 2);
        // Same colour, the second dashed (line and legend).
        assert_eq!(s.matches(COLOURS[0]).count(), 2 + 4 + 2);
        assert_eq!(s.matches("stroke-dasharray").count(), 2);
        assert!(s.contains("a &lt; b") && s.contains("two &amp; more"));
        // On a log axis the zero point cannot be drawn and is left out of its line.
        assert_eq!(s.matches("<circle").count(), 4);
        // Decades 1 … 100 000 on x (64 … 65 536 spans 10^1 … 10^5).
        assert!(s.contains(">100k</text>") && s.contains(">10</text>"));
    }

    #[test]
    fn given_ticks_replace_the_automatic_ones() {
        let mut c = chart(true);
        c.x_ticks = vec![(64.0, "64 B".into()), (65536.0, "64 KiB".into())];
        let s = render(&c);
        assert!(s.contains(">64 B</text>") && s.contains(">64 KiB</text>"));
        assert!(!s.contains(">100k</text>"));
    }

    #[test]
    fn linear_axes_start_at_zero_with_round_ticks() {
        let a = Axis::new([0.3, 7.2].into_iter(), false);
        assert_eq!((a.lo, a.hi), (0.0, 8.0));
        let t: Vec<String> = a.ticks().into_iter().map(|t| t.1).collect();
        assert_eq!(t, ["0", "2", "4", "6", "8"]);
        assert_eq!(nice_step(0.13), 0.2);
        assert_eq!(label(65536.0), "65.5k");
        assert_eq!(label(2_000_000.0), "2M");
    }

    #[test]
    fn points_map_into_the_plot_area() {
        let s = render(&chart(false));
        for cap in s.split("points=\"").skip(1) {
            let pts = &cap[..cap.find('"').unwrap_or(0)];
            for p in pts.split(' ') {
                let (x, y) = p.split_once(',').expect("x,y");
                let (x, y): (f64, f64) = (x.parse().expect("x"), y.parse().expect("y"));
                assert!((LEFT..=WIDTH - RIGHT).contains(&x), "{x}");
                assert!((TOP..=HEIGHT - BOTTOM).contains(&y), "{y}");
            }
        }
    }
}
