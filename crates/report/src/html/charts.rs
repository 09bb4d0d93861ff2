//! The report's charts as inline SVG: estimates with interval whiskers (never bars from
//! zero), a forest plot of paired differences, quality against cost on log axes with the
//! Pareto front, heatmaps, reliability diagrams and line charts.

use lmcompare_metrics::curves::ReliabilityBin;
use lmcompare_metrics::pareto::pareto_front;

use super::svg::{si, Scale, Svg};

const WIDTH: f64 = 680.0;
/// Longer labels are cut in the charts (the full text is in each mark's tip and the tables).
const LABEL_CHARS: usize = 36;

/// Colour class of the i-th series (the page's CSS holds a colour-blind-safe palette).
pub fn colour(i: usize) -> String {
    format!("c{}", i % 8)
}

/// One estimate with its interval.
#[derive(Debug, Clone)]
pub struct IntervalRow {
    pub label: String,
    pub value: f64,
    pub low: Option<f64>,
    pub high: Option<f64>,
    /// Written at the right end of the row (e.g. a p-value).
    pub note: String,
    /// Highlight the row (best model, significant difference).
    pub strong: bool,
}

/// A generous width estimate of 12px text (bold included), for margins.
fn text_width(s: &str) -> f64 {
    s.chars().count() as f64 * 7.4
}

/// Estimates as dots with interval whiskers, one row each; `zero` draws the no-difference
/// line (forest plots). The axis spans the data, not zero.
pub fn interval_chart(rows: &[IntervalRow], axis_title: &str, zero: bool) -> String {
    let left = 16.0
        + rows
            .iter()
            .map(|r| text_width(&short(&r.label, LABEL_CHARS)))
            .fold(40.0, f64::max);
    let right_pad = 16.0
        + rows
            .iter()
            .map(|r| text_width(&r.note))
            .fold(0.0, f64::max)
            .min(220.0);
    let (row_h, top) = (26.0, 12.0);
    let plot_bottom = top + row_h * rows.len() as f64;
    let height = plot_bottom + 46.0;
    let values = rows
        .iter()
        .flat_map(|r| [Some(r.value), r.low, r.high])
        .flatten();
    let include: &[f64] = if zero { &[0.0] } else { &[] };
    let values: Vec<f64> = values.collect();
    let mut x = Scale::nice(values.iter().copied(), (left, WIDTH - right_pad), include);
    if !zero {
        x = x.within_unit(values.iter().copied());
    }
    let mut svg = Svg::new(WIDTH, height, axis_title);
    svg.x_axis(&x, plot_bottom, top, axis_title);
    if zero {
        let x0 = x.map(0.0);
        svg.line(x0, top - 4.0, x0, plot_bottom, "zero");
    }
    for (i, r) in rows.iter().enumerate() {
        let y = top + row_h * (i as f64 + 0.5);
        svg.text(
            left - 10.0,
            y + 4.0,
            &short(&r.label, LABEL_CHARS),
            "end",
            if r.strong { "label strong" } else { "label" },
        );
        let tip = match (r.low, r.high) {
            (Some(l), Some(h)) => format!("{}: {:.4} [{:.4}, {:.4}]", r.label, r.value, l, h),
            _ => format!("{}: {:.4}", r.label, r.value),
        };
        if let (Some(l), Some(h)) = (r.low, r.high) {
            if l.is_finite() && h.is_finite() {
                let (xl, xh) = (x.map(l), x.map(h));
                svg.line(xl, y, xh, y, "whisker");
                svg.line(xl, y - 5.0, xl, y + 5.0, "whisker");
                svg.line(xh, y - 5.0, xh, y + 5.0, "whisker");
            }
        }
        if r.value.is_finite() {
            svg.circle(
                x.map(r.value),
                y,
                5.0,
                if r.strong { "dot strong" } else { "dot" },
                Some(&tip),
            );
        }
        if !r.note.is_empty() {
            svg.text(WIDTH - right_pad + 10.0, y + 4.0, &r.note, "start", "note");
        }
    }
    svg.finish()
}

/// A model on a quality-vs-cost chart.
#[derive(Debug, Clone)]
pub struct CostPoint {
    pub label: String,
    pub cost: f64,
    pub quality: f64,
    pub low: Option<f64>,
    pub high: Option<f64>,
}

/// Quality against cost on a log axis, the Pareto front (no model both better and cheaper)
/// as a staircase, each model labelled. Points without a positive cost are left out (the
/// caller says so). `higher_is_better` orients the front.
pub fn cost_chart(
    points: &[CostPoint],
    cost_title: &str,
    quality_title: &str,
    higher_is_better: bool,
) -> String {
    let pts: Vec<&CostPoint> = points
        .iter()
        .filter(|p| p.cost.is_finite() && p.cost > 0.0 && p.quality.is_finite())
        .collect();
    let (left, top, bottom_pad, right_pad) = (70.0, 14.0, 50.0, 120.0);
    let height = 300.0;
    let mut svg = Svg::new(
        WIDTH,
        height,
        &format!("{quality_title} against {cost_title}"),
    );
    if pts.is_empty() {
        svg.text(
            WIDTH / 2.0,
            height / 2.0,
            "no model reports this cost",
            "middle",
            "note",
        );
        return svg.finish();
    }
    let (cmin, cmax) = pts.iter().fold((f64::INFINITY, 0.0f64), |(a, b), p| {
        (a.min(p.cost), b.max(p.cost))
    });
    let x = Scale::log((cmin, cmax), (left, WIDTH - right_pad));
    let qualities: Vec<f64> = pts
        .iter()
        .flat_map(|p| [Some(p.quality), p.low, p.high])
        .flatten()
        .collect();
    let y = Scale::nice(qualities.iter().copied(), (height - bottom_pad, top), &[])
        .within_unit(qualities.iter().copied());
    svg.x_axis(&x, height - bottom_pad, top, cost_title);
    svg.y_axis(&y, left, WIDTH - right_pad, quality_title);
    let oriented: Vec<(f64, f64)> = pts
        .iter()
        .map(|p| {
            (
                if higher_is_better {
                    p.quality
                } else {
                    -p.quality
                },
                p.cost,
            )
        })
        .collect();
    let mut front: Vec<&CostPoint> = pareto_front(&oriented)
        .into_iter()
        .map(|i| pts[i])
        .collect();
    front.sort_by(|a, b| a.cost.total_cmp(&b.cost));
    let mut stair = Vec::new();
    for (i, p) in front.iter().enumerate() {
        if i > 0 {
            stair.push((x.map(p.cost), y.map(front[i - 1].quality)));
        }
        stair.push((x.map(p.cost), y.map(p.quality)));
    }
    svg.polyline(&stair, "front");
    // Labels step down until they clear the ones already placed.
    let mut placed: Vec<(f64, f64, f64)> = Vec::new();
    for (i, p) in pts.iter().enumerate() {
        let (px, py) = (x.map(p.cost), y.map(p.quality));
        if let (Some(l), Some(h)) = (p.low, p.high) {
            if l.is_finite() && h.is_finite() {
                svg.line(px, y.map(l), px, y.map(h), "whisker");
            }
        }
        let on_front = front.iter().any(|f| std::ptr::eq(*f, *p));
        let class = format!("dot {}{}", colour(i), if on_front { " strong" } else { "" });
        svg.circle(
            px,
            py,
            5.5,
            &class,
            Some(&format!("{}: {:.4} at {}", p.label, p.quality, si(p.cost))),
        );
        let w = text_width(&short(&p.label, LABEL_CHARS));
        let mut ly = py - 7.0;
        for _ in 0..8 {
            let clash = placed
                .iter()
                .any(|&(x0, x1, y0)| px + 8.0 < x1 && x0 < px + 8.0 + w && (ly - y0).abs() < 13.0);
            if !clash {
                break;
            }
            ly += 14.0;
        }
        placed.push((px + 8.0, px + 8.0 + w, ly));
        svg.text(
            px + 8.0,
            ly,
            &short(&p.label, LABEL_CHARS),
            "start",
            "label",
        );
    }
    svg.finish()
}

/// A heatmap: `shade[r][c]` in [0, 1] colours the cell, `text[r][c]` is written in it.
pub fn heatmap(
    rows: &[String],
    cols: &[String],
    shade: &[Vec<f64>],
    text: &[Vec<String>],
    title: &str,
) -> String {
    let left = 16.0
        + rows
            .iter()
            .map(|r| text_width(r))
            .fold(40.0, f64::max)
            .min(160.0);
    let cell_w = ((WIDTH / 2.0 - left - 10.0) / cols.len().max(1) as f64).clamp(34.0, 90.0);
    let cell_h = 30.0_f64.min(300.0 / rows.len().max(1) as f64).max(16.0);
    let top = 40.0;
    let width = left + cell_w * cols.len() as f64 + 12.0;
    let height = top + cell_h * rows.len() as f64 + 30.0;
    let mut svg = Svg::new(width, height, title);
    svg.text(
        left + cell_w * cols.len() as f64 / 2.0,
        14.0,
        "predicted",
        "middle",
        "axis-title",
    );
    for (j, col) in cols.iter().enumerate() {
        svg.text(
            left + cell_w * (j as f64 + 0.5),
            top - 8.0,
            &short(col, 10),
            "middle",
            "tick",
        );
    }
    for (i, row) in rows.iter().enumerate() {
        let y = top + cell_h * i as f64;
        svg.text(
            left - 8.0,
            y + cell_h / 2.0 + 4.0,
            &short(row, 22),
            "end",
            "tick",
        );
        for (j, col) in cols.iter().enumerate() {
            let v = shade.get(i).and_then(|r| r.get(j)).copied().unwrap_or(0.0);
            let t = text
                .get(i)
                .and_then(|r| r.get(j))
                .cloned()
                .unwrap_or_default();
            let x = left + cell_w * j as f64;
            let tip = format!("gold {row}, predicted {col}: {t}");
            svg.rect(
                [x, y, cell_w - 1.0, cell_h - 1.0],
                "cell",
                Some(v.max(0.04)),
                Some(&tip),
            );
            svg.text(
                x + cell_w / 2.0,
                y + cell_h / 2.0 + 4.0,
                &t,
                "middle",
                if v > 0.55 {
                    "cell-text on"
                } else {
                    "cell-text"
                },
            );
        }
    }
    svg.text(
        left + cell_w * cols.len() as f64 / 2.0,
        height - 8.0,
        "rows: gold label",
        "middle",
        "note",
    );
    svg.finish()
}

pub(super) fn short(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(max - 1).collect::<String>())
    }
}

/// Accuracy against confidence per bin (bars), the diagonal of perfect calibration, each
/// bin's count, and the ECE.
pub fn reliability(bins: &[ReliabilityBin], ece: f64, title: &str) -> String {
    let (left, top, size) = (60.0, 24.0, 260.0);
    let width = left + size + 20.0;
    let height = top + size + 50.0;
    let x = Scale::linear((0.0, 1.0), (left, left + size));
    let y = Scale::linear((0.0, 1.0), (top + size, top));
    let mut svg = Svg::new(width, height, title);
    svg.x_axis(&x, top + size, top, "confidence (top-label probability)");
    svg.y_axis(&y, left, left + size, "accuracy");
    svg.line(x.map(0.0), y.map(0.0), x.map(1.0), y.map(1.0), "diagonal");
    for b in bins {
        let (Some(acc), Some(conf)) = (b.accuracy, b.mean_confidence) else {
            continue;
        };
        let (x0, x1) = (x.map(b.lower), x.map(b.upper));
        let tip = format!(
            "({:.2}, {:.2}]: {} examples, accuracy {:.3}, mean confidence {:.3}",
            b.lower, b.upper, b.count, acc, conf
        );
        svg.rect(
            [x0 + 0.5, y.map(acc), x1 - x0 - 1.0, y.map(0.0) - y.map(acc)],
            "bar",
            None,
            Some(&tip),
        );
        svg.circle(x.map(conf), y.map(conf), 2.5, "gapdot", None);
        svg.text(
            (x0 + x1) / 2.0,
            y.map(acc) - 4.0,
            &b.count.to_string(),
            "middle",
            "count",
        );
    }
    let label = if ece.is_finite() {
        format!("ECE = {ece:.4}")
    } else {
        "ECE undefined".into()
    };
    svg.text(left + 8.0, top + 14.0, &label, "start", "label strong");
    svg.finish()
}

/// A line (or marker) series.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub dashed: bool,
    /// Markers only (scatter of trials against a hyperparameter).
    pub markers: bool,
    pub colour: usize,
}

/// How a line chart's axes are set.
#[derive(Debug, Clone, Default)]
pub struct LineAxes {
    pub x_title: String,
    pub y_title: String,
    pub x_domain: Option<(f64, f64)>,
    pub y_domain: Option<(f64, f64)>,
    pub x_log: bool,
    /// The y = x line (ROC chance).
    pub diagonal: bool,
    /// Category names for x positions 0, 1, ... (categorical hyperparameters).
    pub x_categories: Vec<String>,
}

pub fn line_chart(series: &[Series], axes: &LineAxes, title: &str) -> String {
    let (left, top, plot_w, plot_h): (f64, f64, f64, f64) = (64.0, 14.0, 300.0, 220.0);
    let legend_w = 16.0
        + series
            .iter()
            .map(|s| text_width(&s.name))
            .fold(0.0, f64::max)
            .min(200.0)
        + 24.0;
    let legend_rows = series.len().min(14) as f64;
    let width = left + plot_w + legend_w;
    let height = (top + plot_h + 50.0).max(top + 18.0 * legend_rows + 10.0);
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let ys = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let x = match (axes.x_domain, axes.x_log) {
        (Some(d), false) => Scale::linear(d, (left, left + plot_w)),
        (_, true) => {
            let v: Vec<f64> = xs.filter(|v| *v > 0.0).collect();
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(0.0, f64::max);
            if v.is_empty() {
                Scale::log((1.0, 10.0), (left, left + plot_w))
            } else {
                Scale::log((lo, hi), (left, left + plot_w))
            }
        }
        (None, false) if !axes.x_categories.is_empty() => Scale::linear(
            (-0.5, axes.x_categories.len() as f64 - 0.5),
            (left, left + plot_w),
        ),
        (None, false) => Scale::nice(xs, (left, left + plot_w), &[]),
    };
    let y = match axes.y_domain {
        Some(d) => Scale::linear(d, (top + plot_h, top)),
        None => Scale::nice(ys, (top + plot_h, top), &[]),
    };
    let mut svg = Svg::new(width, height, title);
    if axes.x_categories.is_empty() {
        svg.x_axis(&x, top + plot_h, top, &axes.x_title);
    } else {
        svg.line(x.r0, top + plot_h, x.r1, top + plot_h, "axis");
        for (i, name) in axes.x_categories.iter().enumerate() {
            svg.text(
                x.map(i as f64),
                top + plot_h + 16.0,
                &short(name, 14),
                "middle",
                "tick",
            );
        }
        svg.text(
            left + plot_w / 2.0,
            top + plot_h + 34.0,
            &axes.x_title,
            "middle",
            "axis-title",
        );
    }
    svg.y_axis(&y, left, left + plot_w, &axes.y_title);
    if axes.diagonal {
        svg.line(
            x.map(x.d0),
            y.map(y.d0),
            x.map(x.d1),
            y.map(y.d1),
            "diagonal",
        );
    }
    for s in series {
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite() && (!axes.x_log || p.0 > 0.0))
            .map(|&(a, b)| (x.map(a), y.map(b)))
            .collect();
        let cls = colour(s.colour);
        if s.markers {
            for &(px, py) in &pts {
                svg.circle(px, py, 4.0, &format!("dot {cls}"), Some(&s.name));
            }
        } else {
            svg.polyline(
                &pts,
                &format!("series {cls}{}", if s.dashed { " dashed" } else { "" }),
            );
        }
    }
    for (i, s) in series.iter().take(14).enumerate() {
        let ly = top + 8.0 + 18.0 * i as f64;
        let lx = left + plot_w + 16.0;
        let cls = colour(s.colour);
        if s.markers {
            svg.circle(lx + 9.0, ly, 4.0, &format!("dot {cls}"), None);
        } else {
            svg.line(
                lx,
                ly,
                lx + 18.0,
                ly,
                &format!("series {cls}{}", if s.dashed { " dashed" } else { "" }),
            );
        }
        svg.text(lx + 24.0, ly + 4.0, &s.name, "start", "tick");
    }
    if series.len() > 14 {
        svg.text(
            left + plot_w + 16.0,
            top + 8.0 + 18.0 * 14.0,
            &format!("… {} more", series.len() - 14),
            "start",
            "note",
        );
    }
    svg.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (x, text) of every tick label.
    fn ticks(svg: &str) -> Vec<(f64, String)> {
        let mut out = Vec::new();
        let mut rest = svg;
        while let Some(at) = rest.find(r#"<text class="tick" x=""#) {
            rest = &rest[at + 22..];
            let x: f64 = rest[..rest.find('"').unwrap()].parse().unwrap();
            let t0 = rest.find('>').unwrap() + 1;
            let t1 = rest.find("</text>").unwrap();
            out.push((x, rest[t0..t1].to_owned()));
        }
        out
    }

    fn attr(tag: &str, name: &str) -> f64 {
        let key = format!(r#" {name}=""#);
        let at = tag.find(&key).unwrap() + key.len();
        tag[at..at + tag[at..].find('"').unwrap()].parse().unwrap()
    }

    /// The elements `<{tag} class="{class}"...>`.
    fn elements<'a>(svg: &'a str, open: &str) -> Vec<&'a str> {
        svg.match_indices(open)
            .map(|(i, _)| &svg[i..i + svg[i..].find('>').unwrap()])
            .collect()
    }

    #[test]
    fn whiskers_and_dots_sit_at_their_values_on_the_drawn_axis() {
        let rows = vec![
            IntervalRow {
                label: "a".into(),
                value: 0.80,
                low: Some(0.75),
                high: Some(0.85),
                note: String::new(),
                strong: true,
            },
            IntervalRow {
                label: "b".into(),
                value: 0.70,
                low: Some(0.62),
                high: Some(0.77),
                note: "p = 0.01".into(),
                strong: false,
            },
        ];
        let svg = interval_chart(&rows, "f1_macro", false);
        // The value → pixel map from two labelled ticks.
        let t = ticks(&svg);
        assert!(t.len() >= 3, "{t:?}");
        let (x0, v0) = (t[0].0, t[0].1.parse::<f64>().unwrap());
        let (x1, v1) = (t[t.len() - 1].0, t[t.len() - 1].1.parse::<f64>().unwrap());
        let px = |v: f64| x0 + (v - v0) * (x1 - x0) / (v1 - v0);
        let dots = elements(&svg, "<circle class=\"dot");
        assert_eq!(dots.len(), 2);
        assert!((attr(dots[0], "cx") - px(0.80)).abs() < 0.02);
        assert!((attr(dots[1], "cx") - px(0.70)).abs() < 0.02);
        let whiskers = elements(&svg, "<line class=\"whisker\"");
        assert_eq!(whiskers.len(), 6, "a span and two caps per row");
        assert!((attr(whiskers[0], "x1") - px(0.75)).abs() < 0.02);
        assert!((attr(whiskers[0], "x2") - px(0.85)).abs() < 0.02);
        assert!((attr(whiskers[3], "x1") - px(0.62)).abs() < 0.02);
        assert!((attr(whiskers[3], "x2") - px(0.77)).abs() < 0.02);
        // Rows one under the other, the span at the dot's height.
        assert_eq!(attr(whiskers[0], "y1"), attr(dots[0], "cy"));
        assert!(attr(dots[1], "cy") > attr(dots[0], "cy"));
        // Not a bar chart from zero: the axis starts near the data.
        assert!(v0 > 0.5, "{t:?}");
        assert!(svg.contains(">p = 0.01</text>"));
    }

    #[test]
    fn forest_plots_draw_the_zero_line_where_zero_is() {
        let rows = vec![IntervalRow {
            label: "a − b".into(),
            value: 0.05,
            low: Some(0.01),
            high: Some(0.09),
            note: "p_holm = 0.02".into(),
            strong: true,
        }];
        let svg = interval_chart(&rows, "difference", true);
        let t = ticks(&svg);
        let zero_tick = t.iter().find(|(_, s)| s == "0").expect("a 0 tick");
        let zero = elements(&svg, "<line class=\"zero\"");
        assert_eq!(zero.len(), 1);
        assert!((attr(zero[0], "x1") - zero_tick.0).abs() < 0.02);
    }

    #[test]
    fn cost_chart_uses_decades_and_draws_the_front_through_undominated_models() {
        let p = |l: &str, c: f64, q: f64| CostPoint {
            label: l.into(),
            cost: c,
            quality: q,
            low: None,
            high: None,
        };
        let svg = cost_chart(
            &[
                p("big", 1e10, 0.9),
                p("small", 1e8, 0.8),
                p("bad", 1e9, 0.7),
            ],
            "FLOPs",
            "f1",
            true,
        );
        let t: Vec<String> = ticks(&svg).into_iter().map(|t| t.1).collect();
        assert!(
            t.contains(&"100M".to_string()) && t.contains(&"10G".to_string()),
            "{t:?}"
        );
        let front = elements(&svg, "<polyline class=\"front\"");
        assert_eq!(front.len(), 1);
        // small → (step) → big: three vertices; "bad" is dominated by "small".
        let pts = front[0].split("points=\"").nth(1).unwrap();
        assert_eq!(
            pts.trim_end_matches(['"', '/']).split(' ').count(),
            3,
            "{pts}"
        );
        assert_eq!(elements(&svg, "strong\"").len(), 2);
    }

    #[test]
    fn reliability_bars_reach_each_bins_accuracy() {
        let bins = vec![
            ReliabilityBin {
                lower: 0.5,
                upper: 0.75,
                count: 10,
                mean_confidence: Some(0.6),
                accuracy: Some(0.5),
            },
            ReliabilityBin {
                lower: 0.75,
                upper: 1.0,
                count: 0,
                mean_confidence: None,
                accuracy: None,
            },
        ];
        let svg = reliability(&bins, 0.1, "r");
        let bars = elements(&svg, "<rect class=\"bar\"");
        assert_eq!(bars.len(), 1, "empty bins draw nothing");
        // y = 24 + 260 · (1 − 0.5)
        assert!((attr(bars[0], "y") - 154.0).abs() < 0.02);
        assert!(svg.contains("ECE = 0.1000") && svg.contains(">10</text>"));
    }
}
