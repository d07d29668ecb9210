//! Minimal SVG charts for the report: lines per series, or bars, with axes and a legend.

use std::fmt::Write as _;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 360.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 48.0;
const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

pub struct Series {
    name: String,
    values: Vec<f64>,
}

impl Series {
    pub fn new(name: &str, values: Vec<f64>) -> Self {
        Self {
            name: name.to_owned(),
            values,
        }
    }
}

pub struct Chart {
    title: String,
    x_label: String,
    y_label: String,
    series: Vec<Series>,
    bars: bool,
}

impl Chart {
    pub fn lines(title: &str, x_label: &str, y_label: &str, series: Vec<Series>) -> Self {
        Self {
            title: title.to_owned(),
            x_label: x_label.to_owned(),
            y_label: y_label.to_owned(),
            series,
            bars: false,
        }
    }

    pub fn bars(title: &str, x_label: &str, y_label: &str, values: Vec<f64>) -> Self {
        Self {
            bars: true,
            ..Self::lines(title, x_label, y_label, vec![Series::new(y_label, values)])
        }
    }

    pub fn render(&self) -> String {
        let points = self
            .series
            .iter()
            .map(|s| s.values.len())
            .max()
            .unwrap_or(0);
        let top = self
            .series
            .iter()
            .flat_map(|s| s.values.iter().copied())
            .filter(|v| v.is_finite())
            .fold(0.0f64, f64::max);
        let scale_top = nice_ceiling(top);
        let plot_w = WIDTH - LEFT - RIGHT;
        let plot_h = HEIGHT - TOP - BOTTOM;
        let slots = points.max(1) as f64;
        let x = |i: usize| {
            if self.bars {
                LEFT + plot_w * (i as f64 + 0.5) / slots
            } else {
                LEFT + plot_w * i as f64 / (slots - 1.0).max(1.0)
            }
        };
        let y = |v: f64| TOP + plot_h * (1.0 - v / scale_top);
        let mut svg = String::new();
        let _ = write!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
        );
        let _ = write!(
            svg,
            r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/><text x="{LEFT}" y="22" font-size="15" font-weight="bold">{}</text>"#,
            escape(&self.title)
        );
        for tick in 0..=4 {
            let value = scale_top * f64::from(tick) / 4.0;
            let at = y(value);
            let _ = write!(
                svg,
                r##"<line x1="{LEFT}" y1="{at:.1}" x2="{:.1}" y2="{at:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                WIDTH - RIGHT,
                LEFT - 6.0,
                at + 4.0,
                format_value(value)
            );
        }
        let step = (points / 10).max(1);
        for i in (0..points).step_by(step) {
            let _ = write!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{i}</text>"#,
                x(i),
                HEIGHT - BOTTOM + 16.0
            );
        }
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text x="14" y="{:.1}" transform="rotate(-90 14 {:.1})" text-anchor="middle">{}</text>"##,
            LEFT + plot_w / 2.0,
            HEIGHT - 10.0,
            escape(&self.x_label),
            TOP + plot_h / 2.0,
            TOP + plot_h / 2.0,
            escape(&self.y_label)
        );
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{:.1}" stroke="#333"/><line x1="{LEFT}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#333"/>"##,
            TOP + plot_h,
            TOP + plot_h,
            WIDTH - RIGHT,
            TOP + plot_h
        );
        for (index, series) in self.series.iter().enumerate() {
            let colour = COLOURS[index % COLOURS.len()];
            if self.bars {
                let width = (plot_w / slots * 0.8).max(1.0);
                for (i, &v) in series.values.iter().enumerate() {
                    let _ = write!(
                        svg,
                        r#"<rect x="{:.1}" y="{:.1}" width="{width:.1}" height="{:.1}" fill="{colour}"/>"#,
                        x(i) - width / 2.0,
                        y(v),
                        (TOP + plot_h - y(v)).max(0.0)
                    );
                }
            } else {
                let path: Vec<String> = series
                    .values
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| format!("{:.1},{:.1}", x(i), y(v)))
                    .collect();
                let _ = write!(
                    svg,
                    r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
                    path.join(" ")
                );
                let legend_y = TOP + 14.0 * index as f64;
                let _ = write!(
                    svg,
                    r#"<rect x="{:.1}" y="{:.1}" width="10" height="10" fill="{colour}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
                    WIDTH - RIGHT - 150.0,
                    legend_y,
                    WIDTH - RIGHT - 135.0,
                    legend_y + 9.0,
                    escape(&series.name)
                );
            }
        }
        svg.push_str("</svg>\n");
        svg
    }
}

/// 1, 2 or 5 times a power of ten, at or above `value`.
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 {
        return 1.0;
    }
    let power = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|&c| c >= value)
        .unwrap_or(10.0 * power)
}

fn format_value(value: f64) -> String {
    if value >= 10_000.0 {
        format!("{:.0}k", value / 1000.0)
    } else if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_well_formed_and_scaled() {
        let svg = Chart::lines(
            "A & B",
            "day",
            "n",
            vec![Series::new("a", vec![0.0, 3.0, 7.0])],
        )
        .render();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("A &amp; B"));
        assert!(
            svg.contains(">10<"),
            "the axis tops out at 10 for a maximum of 7"
        );
        let bars = Chart::bars("k", "day", "keys", vec![1.0, 0.0]).render();
        assert_eq!(bars.matches("<rect").count(), 1 + 2);
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(130.0), 200.0);
    }
}
