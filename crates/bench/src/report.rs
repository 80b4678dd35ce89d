//! Latency histograms, the JSON result and a latency-over-time plot (SVG, written by hand).

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

#[derive(Debug, Clone, Serialize, Default)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// Microsecond histogram summarised in milliseconds.
pub fn summarise(h: &Histogram<u64>) -> Percentiles {
    let ms = |v: u64| v as f64 / 1000.0;
    Percentiles {
        count: h.len(),
        mean: h.mean() / 1000.0,
        p50: ms(h.value_at_quantile(0.50)),
        p90: ms(h.value_at_quantile(0.90)),
        p99: ms(h.value_at_quantile(0.99)),
        p999: ms(h.value_at_quantile(0.999)),
        max: ms(h.max()),
    }
}

pub fn histogram() -> Histogram<u64> {
    // 1 µs to 10 minutes at 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).expect("histogram"))
}

/// Errors by kind, e.g. `send:429`, `sync:timeout`.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Errors(pub BTreeMap<String, u64>);

impl Errors {
    pub fn add(&mut self, kind: impl Into<String>) {
        *self.0.entry(kind.into()).or_default() += 1;
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SecondPoint {
    pub t: u64,
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// An SVG line plot of p50 and p99 delivery latency per second.
pub fn svg_plot(title: &str, points: &[SecondPoint]) -> String {
    let (w, h, m) = (900.0, 420.0, 60.0);
    let max_t = points.iter().map(|p| p.t).max().unwrap_or(1).max(1) as f64;
    let max_y = points.iter().map(|p| p.p99_ms).fold(1.0, f64::max) * 1.1;
    let x = |t: u64| m + (t as f64 / max_t) * (w - 2.0 * m);
    let y = |v: f64| h - m - (v / max_y) * (h - 2.0 * m);
    let line = |f: &dyn Fn(&SecondPoint) -> f64| {
        points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.t), y(f(p))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut ticks = String::new();
    for i in 0..=5 {
        let v = max_y * i as f64 / 5.0;
        ticks.push_str(&format!(
            r##"<line x1="{m}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end">{v:.1}</text>"##,
            w - m,
            m - 6.0,
            y(v) + 4.0,
            y = y(v),
        ));
    }
    let esc = title.replace('&', "&amp;").replace('<', "&lt;");
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="{m}" y="30" font-size="15">{esc}</text>
{ticks}
<line x1="{m}" y1="{b}" x2="{r}" y2="{b}" stroke="black"/><line x1="{m}" y1="{m}" x2="{m}" y2="{b}" stroke="black"/>
<text x="{cx}" y="{xl}" font-size="12" text-anchor="middle">seconds since start</text>
<text x="14" y="{cy}" font-size="12" transform="rotate(-90 14 {cy})" text-anchor="middle">delivery latency (ms)</text>
<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{p50}"/>
<polyline fill="none" stroke="#d62728" stroke-width="1.5" points="{p99}"/>
<text x="{lx}" y="50" font-size="12" fill="#1f77b4">p50</text><text x="{lx}" y="66" font-size="12" fill="#d62728">p99</text>
</svg>
"##,
        b = h - m,
        r = w - m,
        cx = w / 2.0,
        xl = h - 20.0,
        cy = h / 2.0,
        lx = w - m - 30.0,
        p50 = line(&|p| p.p50_ms),
        p99 = line(&|p| p.p99_ms),
    )
}
