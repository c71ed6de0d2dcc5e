//! The load sweep as a picture: latency percentiles against offered load, with the share of the
//! offered load the service completed, so the knee where it saturates is visible at a glance.
//! Plain SVG written by hand: a dozen points need no plotting library.
use std::fmt::Write;

/// A line of the chart: its name, colour and the figure it draws.
type Series = (&'static str, &'static str, fn(&Point) -> f64);

/// One step of a sweep.
#[derive(Debug, Clone)]
pub struct Point {
    /// Requests per second offered.
    pub offered: f64,
    /// Requests per second completed.
    pub achieved: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub error_rate: f64,
}

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 440.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 70.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;

/// The whole decades (powers of ten, in ms) that hold `low` to `high`; at least one.
fn decades(low: f64, high: f64) -> (i32, i32) {
    let low = if low.is_finite() && low > 0.0 {
        low
    } else {
        1.0
    };
    let high = if high.is_finite() && high > low {
        high
    } else {
        low * 10.0
    };
    let a = low.log10().floor() as i32;
    let b = (high.log10().ceil() as i32).max(a + 1);
    (a, b)
}

/// A "nice" upper bound for an axis: 1, 2 or 5 times a power of ten, at least `max`.
fn nice_ceiling(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|v| *v >= max)
        .unwrap_or(10.0 * magnitude)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The SVG document for `points` (sorted by offered load), titled `title`.
pub fn latency_against_load(title: &str, points: &[Point]) -> String {
    let mut points = points.to_vec();
    points.sort_by(|a, b| a.offered.total_cmp(&b.offered));
    let x_max = nice_ceiling(points.iter().map(|p| p.offered).fold(0.0, f64::max));
    // Latency on a log scale, whole decades: under load it spans milliseconds to seconds, and
    // a linear axis flattens everything before the knee.
    let (decade_low, decade_high) = decades(
        points
            .iter()
            .map(|p| p.p50_ms)
            .fold(f64::INFINITY, f64::min),
        points.iter().map(|p| p.p99_ms).fold(0.0, f64::max),
    );
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |v: f64| LEFT + plot_w * v / x_max;
    let span = f64::from(decade_high - decade_low);
    let y = |v: f64| {
        let v = v.max(10f64.powi(decade_low));
        TOP + plot_h * (1.0 - (v.log10() - f64::from(decade_low)) / span)
    };
    // The completed share on the right axis, 0-100 %.
    let y_share = |share: f64| TOP + plot_h * (1.0 - share.clamp(0.0, 1.0));

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    for decade in decade_low..=decade_high {
        let gy = y(10f64.powi(decade));
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{gy:.1}" x2="{:.1}" y2="{gy:.1}" stroke="#e4e4e4"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 8.0,
            gy + 4.0,
            10f64.powi(decade),
        );
    }
    for i in 0..=5 {
        let fraction = f64::from(i) / 5.0;
        let (gx, gy) = (LEFT + plot_w * fraction, TOP + plot_h * (1.0 - fraction));
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="start" fill="#2a7d2a">{}%</text><text x="{gx:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            LEFT + plot_w + 8.0,
            gy + 4.0,
            (fraction * 100.0).round(),
            TOP + plot_h + 18.0,
            x_max * fraction,
        );
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#888"/><text x="{:.1}" y="{:.1}" text-anchor="middle">offered load (requests/s)</text><text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">latency (ms, log scale)</text><text transform="translate({:.1} {:.1}) rotate(90)" text-anchor="middle" fill="#2a7d2a">completed / offered</text>"##,
        LEFT + plot_w / 2.0,
        HEIGHT - 16.0,
        TOP + plot_h / 2.0,
        WIDTH - 14.0,
        TOP + plot_h / 2.0,
    );
    let series: [Series; 3] = [
        ("p50", "#1f77b4", |p| p.p50_ms),
        ("p95", "#ff7f0e", |p| p.p95_ms),
        ("p99", "#d62728", |p| p.p99_ms),
    ];
    for (i, (name, colour, value)) in series.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.offered), y(value(p))))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
            path.join(" ")
        );
        for p in &points {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"><title>{name} {:.1} ms at {:.0}/s</title></circle>"#,
                x(p.offered),
                y(value(p)),
                value(p),
                p.offered
            );
        }
        let legend_y = TOP + 16.0 + 16.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{:.1}" y1="{legend_y:.1}" x2="{:.1}" y2="{legend_y:.1}" stroke="{colour}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{name}</text>"#,
            LEFT + 12.0,
            LEFT + 32.0,
            LEFT + 38.0,
            legend_y + 4.0
        );
    }
    let share: Vec<String> = points
        .iter()
        .map(|p| {
            format!(
                "{:.1},{:.1}",
                x(p.offered),
                y_share(p.achieved / p.offered.max(f64::MIN_POSITIVE))
            )
        })
        .collect();
    let _ = writeln!(
        svg,
        r##"<polyline points="{}" fill="none" stroke="#2a7d2a" stroke-width="2" stroke-dasharray="6 4"/><line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#2a7d2a" stroke-width="2" stroke-dasharray="6 4"/><text x="{:.1}" y="{:.1}">completed / offered</text>"##,
        share.join(" "),
        LEFT + 12.0,
        TOP + 64.0,
        LEFT + 32.0,
        TOP + 64.0,
        LEFT + 38.0,
        TOP + 68.0
    );
    for p in points.iter().filter(|p| p.error_rate >= 0.0005) {
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#d62728" font-size="10">{:.1}% err</text>"##,
            x(p.offered),
            TOP + plot_h - 6.0,
            p.error_rate * 100.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_spans_whole_decades() {
        assert_eq!(decades(2.5, 2300.0), (0, 4));
        assert_eq!(decades(0.4, 9.0), (-1, 1));
        assert_eq!(decades(5.0, 5.0), (0, 2));
        assert_eq!(decades(f64::INFINITY, 0.0), (0, 1));
    }

    #[test]
    fn axes_end_on_round_numbers_above_the_data() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.3), 10.0);
        assert_eq!(nice_ceiling(130.0), 200.0);
        assert_eq!(nice_ceiling(400.0), 500.0);
        assert_eq!(nice_ceiling(500.0), 500.0);
    }

    #[test]
    fn every_point_of_every_series_is_drawn() {
        let points = [
            Point {
                offered: 50.0,
                achieved: 50.0,
                p50_ms: 3.0,
                p95_ms: 8.0,
                p99_ms: 12.0,
                error_rate: 0.0,
            },
            Point {
                offered: 400.0,
                achieved: 250.0,
                p50_ms: 300.0,
                p95_ms: 900.0,
                p99_ms: 1400.0,
                error_rate: 0.02,
            },
        ];
        let svg = latency_against_load("a <sweep>", &points);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<circle").count(), 6);
        assert!(svg.contains("p99 1400.0 ms at 400/s"));
        assert!(svg.contains("a &lt;sweep&gt;"));
        assert!(svg.contains("2.0% err"));
    }
}
