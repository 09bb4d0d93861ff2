//! A small SVG writer: scales with readable ticks and the few shapes the charts need.
//!
//! Written here rather than with `plotters`: the charts are a handful of marks whose
//! coordinates the tests check exactly, colours come from the page's CSS classes (so dark
//! mode and printing restyle them without re-rendering), and every text passes through one
//! escaping function. That is less code than adapting a raster-first plotting backend.

use std::fmt::Write;

use super::escape::esc;

/// A map from data to pixels, linear or base-10 logarithmic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scale {
    pub d0: f64,
    pub d1: f64,
    pub r0: f64,
    pub r1: f64,
    pub log: bool,
}

impl Scale {
    pub fn linear(domain: (f64, f64), range: (f64, f64)) -> Scale {
        let (d0, d1) = if domain.0 == domain.1 {
            (domain.0 - 0.5, domain.1 + 0.5)
        } else {
            domain
        };
        Scale {
            d0,
            d1,
            r0: range.0,
            r1: range.1,
            log: false,
        }
    }

    /// A log scale over whole decades around `domain` (positive values only).
    pub fn log(domain: (f64, f64), range: (f64, f64)) -> Scale {
        let lo = domain.0.max(f64::MIN_POSITIVE).log10().floor();
        let mut hi = domain.1.max(f64::MIN_POSITIVE).log10().ceil();
        if hi <= lo {
            hi = lo + 1.0;
        }
        Scale {
            d0: 10f64.powf(lo),
            d1: 10f64.powf(hi),
            r0: range.0,
            r1: range.1,
            log: true,
        }
    }

    /// A linear scale over a padded, rounded `domain` that holds every value given.
    pub fn nice(
        values: impl IntoIterator<Item = f64>,
        range: (f64, f64),
        include: &[f64],
    ) -> Scale {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values.into_iter().chain(include.iter().copied()) {
            if v.is_finite() {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
        if !lo.is_finite() {
            return Scale::linear((0.0, 1.0), range);
        }
        let pad = if hi > lo {
            (hi - lo) * 0.08
        } else {
            lo.abs().max(1e-3) * 0.05
        };
        let step = nice_step((hi - lo + 2.0 * pad) / 5.0);
        Scale::linear(
            (
                ((lo - pad) / step).floor() * step,
                ((hi + pad) / step).ceil() * step,
            ),
            range,
        )
    }

    /// Within [0, 1] when every value is (accuracies, probabilities): no ticks past 1.
    pub fn within_unit(mut self, values: impl IntoIterator<Item = f64>) -> Scale {
        let mut all_unit = true;
        for v in values {
            all_unit &= !v.is_finite() || (0.0..=1.0).contains(&v);
        }
        if all_unit && !self.log {
            self.d0 = self.d0.max(0.0);
            self.d1 = self.d1.min(1.0);
        }
        self
    }

    pub fn map(&self, v: f64) -> f64 {
        let t = if self.log {
            (v.log10() - self.d0.log10()) / (self.d1.log10() - self.d0.log10())
        } else {
            (v - self.d0) / (self.d1 - self.d0)
        };
        self.r0 + t * (self.r1 - self.r0)
    }

    /// Tick values: 1-2-5 steps (linear) or decades (log).
    pub fn ticks(&self) -> Vec<f64> {
        if self.log {
            let (a, b) = (
                self.d0.log10().round() as i32,
                self.d1.log10().round() as i32,
            );
            return (a..=b).map(|e| 10f64.powi(e)).collect();
        }
        let step = nice_step((self.d1 - self.d0) / 5.0);
        let first = (self.d0 / step).ceil() as i64;
        let last = (self.d1 / step + 1e-9).floor() as i64;
        (first..=last).map(|i| i as f64 * step).collect()
    }
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if raw.is_nan() || raw <= 0.0 || raw.is_infinite() {
        return 1.0;
    }
    let p = 10f64.powf(raw.log10().floor());
    let f = raw / p;
    p * if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    }
}

/// A tick label: short, without float noise.
pub fn tick_label(v: f64, log: bool) -> String {
    if log {
        return si(v);
    }
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1e4 {
        si(v)
    } else if a >= 1.0 {
        trim(format!("{v:.2}"))
    } else {
        trim(format!("{v:.3}"))
    }
}

fn trim(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// 1.2k, 34M, 5.6G.
pub fn si(v: f64) -> String {
    let a = v.abs();
    for (div, suffix) in [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")] {
        if a >= div {
            return format!("{}{suffix}", trim(format!("{:.1}", v / div)));
        }
    }
    if a >= 1.0 || a == 0.0 {
        trim(format!("{v:.1}"))
    } else {
        trim(format!("{v:.3}"))
    }
}

/// Coordinates with two decimals: exact enough, small files.
pub fn c(v: f64) -> String {
    let r = (v * 100.0).round() / 100.0;
    if r == r.trunc() {
        format!("{}", r as i64)
    } else {
        trim(format!("{r:.2}"))
    }
}

/// An SVG document under construction; shapes take CSS classes for their colours.
pub struct Svg {
    pub width: f64,
    pub height: f64,
    label: String,
    body: String,
}

impl Svg {
    pub fn new(width: f64, height: f64, label: &str) -> Svg {
        Svg {
            width,
            height,
            label: label.to_owned(),
            body: String::new(),
        }
    }

    pub fn line(&mut self, x1: f64, y1: f64, x2: f64, y2: f64, class: &str) {
        let _ = write!(
            self.body,
            r#"<line class="{class}" x1="{}" y1="{}" x2="{}" y2="{}"/>"#,
            c(x1),
            c(y1),
            c(x2),
            c(y2)
        );
    }

    /// A rectangle `[x, y, width, height]`; `opacity` scales its class colour (heatmaps),
    /// `tip` shows on hover.
    pub fn rect(
        &mut self,
        [x, y, w, h]: [f64; 4],
        class: &str,
        opacity: Option<f64>,
        tip: Option<&str>,
    ) {
        let _ = write!(
            self.body,
            r#"<rect class="{class}" x="{}" y="{}" width="{}" height="{}""#,
            c(x),
            c(y),
            c(w.max(0.0)),
            c(h.max(0.0))
        );
        if let Some(o) = opacity {
            let _ = write!(self.body, r#" fill-opacity="{}""#, c(o.clamp(0.0, 1.0)));
        }
        self.close("rect", tip);
    }

    pub fn circle(&mut self, cx: f64, cy: f64, r: f64, class: &str, tip: Option<&str>) {
        let _ = write!(
            self.body,
            r#"<circle class="{class}" cx="{}" cy="{}" r="{}""#,
            c(cx),
            c(cy),
            c(r)
        );
        self.close("circle", tip);
    }

    /// Ends the open element, with a hover tip as its `<title>` child.
    fn close(&mut self, tag: &str, tip: Option<&str>) {
        match tip {
            Some(t) => {
                let _ = write!(self.body, "><title>{}</title></{tag}>", esc(t));
            }
            None => self.body.push_str("/>"),
        }
    }

    /// Text; `anchor` is start, middle or end.
    pub fn text(&mut self, x: f64, y: f64, s: &str, anchor: &str, class: &str) {
        let _ = write!(
            self.body,
            r#"<text class="{class}" x="{}" y="{}" text-anchor="{anchor}">{}</text>"#,
            c(x),
            c(y),
            esc(s)
        );
    }

    /// Text turned 90° counter-clockwise about its position (y-axis titles).
    pub fn vtext(&mut self, x: f64, y: f64, s: &str, class: &str) {
        let _ = write!(
            self.body,
            r#"<text class="{class}" x="{}" y="{}" text-anchor="middle" transform="rotate(-90 {} {})">{}</text>"#,
            c(x),
            c(y),
            c(x),
            c(y),
            esc(s)
        );
    }

    pub fn polyline(&mut self, pts: &[(f64, f64)], class: &str) {
        if pts.is_empty() {
            return;
        }
        let mut d = String::new();
        for (i, (x, y)) in pts.iter().enumerate() {
            let _ = write!(d, "{}{},{}", if i == 0 { "" } else { " " }, c(*x), c(*y));
        }
        let _ = write!(self.body, r#"<polyline class="{class}" points="{d}"/>"#);
    }

    /// A horizontal axis at `y` with ticks, grid lines up to `top` and a title.
    pub fn x_axis(&mut self, s: &Scale, y: f64, top: f64, title: &str) {
        self.line(s.r0, y, s.r1, y, "axis");
        for t in s.ticks() {
            let x = s.map(t);
            self.line(x, top, x, y, "grid");
            self.line(x, y, x, y + 4.0, "axis");
            self.text(x, y + 16.0, &tick_label(t, s.log), "middle", "tick");
        }
        self.text((s.r0 + s.r1) / 2.0, y + 34.0, title, "middle", "axis-title");
    }

    /// A vertical axis at `x` with ticks, grid lines across to `right` and a title.
    pub fn y_axis(&mut self, s: &Scale, x: f64, right: f64, title: &str) {
        self.line(x, s.r0, x, s.r1, "axis");
        for t in s.ticks() {
            let y = s.map(t);
            self.line(x, y, right, y, "grid");
            self.line(x - 4.0, y, x, y, "axis");
            self.text(x - 7.0, y + 4.0, &tick_label(t, s.log), "end", "tick");
        }
        self.vtext(x - 42.0, (s.r0 + s.r1) / 2.0, title, "axis-title");
    }

    pub fn finish(self) -> String {
        format!(
            r#"<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {} {}" width="{}" height="{}" role="img" aria-label="{}"><title>{}</title>{}</svg>"#,
            c(self.width),
            c(self.height),
            c(self.width),
            c(self.height),
            esc(&self.label),
            esc(&self.label),
            self.body
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_scales_hold_the_data_and_tick_in_round_steps() {
        let s = Scale::nice([0.81, 0.86], (0.0, 100.0), &[]);
        assert!(s.d0 <= 0.81 && s.d1 >= 0.86 && s.d1 - s.d0 < 0.2, "{s:?}");
        let t = s.ticks();
        assert!(t.len() >= 3, "{t:?}");
        let step = t[1] - t[0];
        assert!(t.windows(2).all(|w| ((w[1] - w[0]) - step).abs() < 1e-12));
        assert_eq!(s.map(s.d0), 0.0);
        assert_eq!(s.map(s.d1), 100.0);
        let z = Scale::nice([0.02, 0.05], (0.0, 1.0), &[0.0]);
        assert!(z.d0 <= 0.0);
    }

    #[test]
    fn log_scales_cover_whole_decades() {
        let s = Scale::log((2.0e7, 3.0e9), (0.0, 300.0));
        assert_eq!((s.d0, s.d1), (1e7, 1e10));
        assert_eq!(s.ticks(), vec![1e7, 1e8, 1e9, 1e10]);
        assert!((s.map(1e8) - 100.0).abs() < 1e-9);
        assert_eq!(si(2.5e9), "2.5G");
        assert_eq!(tick_label(0.85, false), "0.85");
    }

    #[test]
    fn text_is_escaped() {
        let mut s = Svg::new(10.0, 10.0, "a<b");
        s.text(1.0, 2.0, "</svg><script>x</script>", "start", "t");
        let out = s.finish();
        assert!(!out.contains("<script>"));
        assert!(out.contains("&lt;/svg&gt;&lt;script&gt;"));
    }
}
