//! The open-loop rate sweep of `cargo xtask bench --rates R1,R2,...`: each point offers a
//! fixed load (the load generator's `--rate`: operations leave when due, whether or not
//! earlier ones returned, and latency runs from when an operation was due, so queueing
//! behind a slow server counts: no coordinated omission), for rsl and, with `--peer etcd`,
//! for etcd at the same offered loads. Here: parsing the rates, the throughput–latency
//! curves they give (p50 and p99 against the achieved ops/s, per system and backend) as
//! JSON and as a chart panel of the `--plot` SVG.

use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::{json, Value};

/// The mode of a rate-sweep point (the half-load point is `open`, the sweep `closed`).
pub(crate) const RATE_MODE: &str = "open-rate";
/// The highest offered load `--rates` takes (operations per second).
const RATE_MAX: f64 = 100_000_000.0;

/// One `--rates` entry: a positive number of operations per second, optionally with a
/// `k` (thousands) suffix.
pub(crate) fn parse_rate(text: &str) -> Result<f64, String> {
    let trimmed = text.trim();
    let (digits, scale) = match trimmed.strip_suffix(['k', 'K']) {
        Some(digits) => (digits, 1000.0),
        None => (trimmed, 1.0),
    };
    let rate = digits
        .parse::<f64>()
        .map(|value| value * scale)
        .map_err(|_| format!("{text:?} is not a rate in operations per second (e.g. 5000 or 5k)"))?;
    if !(rate.is_finite() && (1.0..=RATE_MAX).contains(&rate)) {
        return Err(format!("rate {text:?} is outside 1..={RATE_MAX:.0} operations per second"));
    }
    Ok(rate)
}

/// The rates in ascending order without repeats (the curves are drawn in this order).
pub(crate) fn normalise_rates(rates: &[f64]) -> Vec<f64> {
    let mut rates = rates.to_vec();
    rates.sort_by(f64::total_cmp);
    rates.dedup();
    rates
}

/// One measured point of a curve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct CurvePoint {
    pub offered_ops_per_s: f64,
    pub ops_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// The throughput–latency curve of one system and backend, in order of offered load.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Curve {
    pub system: String,
    pub backend: String,
    pub points: Vec<CurvePoint>,
}

impl Curve {
    pub(crate) fn name(&self) -> String {
        format!("{}/{}", self.system, self.backend)
    }
}

/// The curves of the rate-sweep runs among `runs` (the `runs` array of the report: each
/// with `system`, `backend`, `mode`, `rate_ops_per_s`, `ops_per_sec`, `p50_us`, `p99_us`).
pub(crate) fn curves(runs: &[Value]) -> Vec<Curve> {
    let mut curves: Vec<Curve> = Vec::new();
    for run in runs.iter().filter(|run| run["mode"] == RATE_MODE) {
        let (system, backend) =
            (run["system"].as_str().unwrap_or("?"), run["backend"].as_str().unwrap_or("?"));
        let point = CurvePoint {
            offered_ops_per_s: run["rate_ops_per_s"].as_f64().unwrap_or(0.0),
            ops_per_s: run["ops_per_sec"].as_f64().unwrap_or(0.0),
            p50_us: run["p50_us"].as_f64().unwrap_or(0.0),
            p99_us: run["p99_us"].as_f64().unwrap_or(0.0),
        };
        match curves.iter_mut().find(|c| c.system == system && c.backend == backend) {
            Some(curve) => curve.points.push(point),
            None => {
                curves.push(Curve { system: system.into(), backend: backend.into(), points: vec![point] })
            }
        }
    }
    for curve in &mut curves {
        curve.points.sort_by(|a, b| a.offered_ops_per_s.total_cmp(&b.offered_ops_per_s));
    }
    curves
}

/// The curves as the report's `curves` array.
pub(crate) fn curves_json(curves: &[Curve]) -> Value {
    let curve = |c: &Curve| {
        json!({
            "system": c.system,
            "backend": c.backend,
            "points": c.points.iter().map(|p| json!({
                "offered_ops_per_s": p.offered_ops_per_s,
                "ops_per_sec": p.ops_per_s,
                "p50_us": p.p50_us,
                "p99_us": p.p99_us,
            })).collect::<Vec<_>>(),
        })
    };
    Value::Array(curves.iter().map(curve).collect())
}

/// Prints each offered load with every curve's achieved rate, p50 and p99.
pub(crate) fn print_curves(curves: &[Curve]) {
    if curves.is_empty() {
        return;
    }
    println!("open loop at fixed offered loads (achieved ops/s, p50 / p99 µs):");
    let rates = normalise_rates(
        &curves.iter().flat_map(|c| c.points.iter().map(|p| p.offered_ops_per_s)).collect::<Vec<_>>(),
    );
    for rate in rates {
        let mut line = format!("  {rate:>9.0}/s");
        for curve in curves {
            if let Some(p) = curve.points.iter().find(|p| p.offered_ops_per_s == rate) {
                line += &format!(
                    "  {}: {:.0} ops/s, {:.0} / {:.0}",
                    curve.name(),
                    p.ops_per_s,
                    p.p50_us,
                    p.p99_us
                );
            }
        }
        println!("{line}");
    }
}

/// Draws the curves on `area`: p50 (thin) and p99 (thick) latency against achieved
/// throughput, one colour per system and backend, latency on a logarithmic axis.
pub(crate) fn draw_curves<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    curves: &[Curve],
    caption: &str,
) -> Result<()> {
    let draw = |error: &dyn std::fmt::Display| anyhow!("drawing the rate sweep: {error}");
    let all = || curves.iter().flat_map(|c| c.points.iter());
    let x_max = all().map(|p| p.ops_per_s / 1000.0).fold(1.0, f64::max) * 1.1;
    let y_max = all().map(|p| p.p99_us.max(p.p50_us) / 1000.0).fold(1.0, f64::max) * 1.5;
    let y_min = all().map(|p| p.p50_us / 1000.0).filter(|&y| y > 0.0).fold(y_max, f64::min).min(1.0) / 1.5;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, (y_min..y_max).log_scale())
        .map_err(|e| draw(&e))?;
    chart
        .configure_mesh()
        .x_desc("achieved operations per second (thousands)")
        .y_desc("latency at the client (ms, log scale)")
        .draw()
        .map_err(|e| draw(&e))?;
    for (index, curve) in curves.iter().enumerate() {
        let color = Palette99::pick(index).to_rgba();
        for (percentile, width) in [("p50", 1), ("p99", 3)] {
            let values: Vec<(f64, f64)> = curve
                .points
                .iter()
                .map(|p| {
                    (p.ops_per_s / 1000.0, if percentile == "p50" { p.p50_us } else { p.p99_us } / 1000.0)
                })
                .filter(|&(_, y)| y > 0.0)
                .collect();
            draw_line(&mut chart, format!("{} {percentile}", curve.name()), &values, color, width)?;
        }
    }
    draw_legend(&mut chart)
}

/// Draws one named line of `values` with a dot at each point (both charts of the plot).
pub(crate) fn draw_line<'a, DB, X, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    name: String,
    values: &[(f64, f64)],
    color: RGBAColor,
    width: u32,
) -> Result<()>
where
    DB: DrawingBackend + 'a,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    let draw = |error: &dyn std::fmt::Display| anyhow!("drawing {name}: {error}");
    chart
        .draw_series(LineSeries::new(values.iter().copied(), color.stroke_width(width)))
        .map_err(|e| draw(&e))?
        .label(name.clone())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(width)));
    chart
        .draw_series(values.iter().map(|&(x, y)| Circle::new((x, y), 3, color.filled())))
        .map_err(|e| draw(&e))?;
    Ok(())
}

/// Draws the legend of every named line, top left.
pub(crate) fn draw_legend<'a, DB, X, Y>(chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>) -> Result<()>
where
    DB: DrawingBackend + 'a,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|error| anyhow!("drawing the legend: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_and_without_thousands() {
        assert_eq!(parse_rate("1000"), Ok(1000.0));
        assert_eq!(parse_rate(" 5k "), Ok(5000.0));
        assert_eq!(parse_rate("2.5K"), Ok(2500.0));
        for bad in ["", "fast", "0", "-5", "0.5", "1e12", "nan", "inf"] {
            let error = parse_rate(bad).unwrap_err();
            assert!(error.contains(&format!("{bad:?}")), "{bad}: {error}");
        }
        assert_eq!(normalise_rates(&[20000.0, 1000.0, 5000.0, 1000.0]), vec![1000.0, 5000.0, 20000.0]);
    }

    fn run(system: &str, rate: f64, achieved: f64, p50: f64, p99: f64) -> Value {
        json!({"system": system, "backend": system, "mode": RATE_MODE, "rate_ops_per_s": rate,
               "ops_per_sec": achieved, "p50_us": p50, "p99_us": p99})
    }

    #[test]
    fn curves_group_rate_points_by_system_in_order_of_offered_load() {
        let runs = vec![
            run("rsl", 5000.0, 4990.0, 900.0, 2100.0),
            json!({"system": "rsl", "backend": "rsl", "mode": "closed", "ops_per_sec": 9e5}),
            run("etcd", 1000.0, 1000.0, 2000.0, 9000.0),
            run("rsl", 1000.0, 1001.0, 800.0, 1500.0),
            run("etcd", 5000.0, 4100.0, 5000.0, 30000.0),
        ];
        let curves = curves(&runs);
        assert_eq!(curves.iter().map(Curve::name).collect::<Vec<_>>(), ["rsl/rsl", "etcd/etcd"]);
        let offered: Vec<f64> = curves[0].points.iter().map(|p| p.offered_ops_per_s).collect();
        assert_eq!(offered, [1000.0, 5000.0], "the closed-loop point is not on a curve");
        assert_eq!(
            curves[1].points[1],
            CurvePoint { offered_ops_per_s: 5000.0, ops_per_s: 4100.0, p50_us: 5000.0, p99_us: 30000.0 }
        );
        let json = curves_json(&curves);
        assert_eq!(json[0]["system"], "rsl");
        assert_eq!(json[0]["points"][1]["offered_ops_per_s"], 5000.0);
        assert_eq!(json[1]["points"][0]["p99_us"], 9000.0);
        assert_eq!(json[1]["points"].as_array().map(Vec::len), Some(2));
    }
}
