//! The figures (SVG): false-rollback rates with intervals, detection-time and promotion-time
//! distributions, the fleet's pooled detection.

use std::path::Path;

use anyhow::anyhow;
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::run::FleetResult;
use crate::scenarios::{ArmSummary, FleetSummary, SingleSummary, WAVE_S, WAVES};
use crate::stats::clopper_pearson;

const J: RGBColor = RGBColor(31, 119, 180);
const F: RGBColor = RGBColor(214, 39, 40);
const T: RGBColor = RGBColor(255, 127, 14);
const K: RGBColor = RGBColor(44, 160, 44);
const GREY: RGBColor = RGBColor(120, 120, 120);

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
/// An arm of a single-cluster summary: its name, colour, x offset and accessor.
type ArmLine = (&'static str, RGBColor, f64, fn(&SingleSummary) -> &ArmSummary);
/// A line of the fleet figure: scenario, label, colour, the time it picks.
type FleetLine = (
    &'static str,
    &'static str,
    RGBColor,
    fn(&FleetResult) -> Option<f64>,
);

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("plot: {e}")
}

pub fn all(dir: &Path, singles: &[SingleSummary], fleets: &[FleetSummary]) -> anyhow::Result<()> {
    aa(&dir.join("judge-aa.svg"), singles)?;
    detection(&dir.join("judge-detection.svg"), singles)?;
    promote(&dir.join("judge-promote.svg"), singles)?;
    fleet(&dir.join("judge-fleet.svg"), fleets)?;
    Ok(())
}

/// The fraction of `runs` with a time ≤ t, as a step line over `[0, end]` minutes.
fn ecdf(times: &[f64], runs: usize, end_min: f64) -> Vec<(f64, f64)> {
    let mut v: Vec<f64> = times.iter().map(|t| t / 60.0).collect();
    v.sort_by(f64::total_cmp);
    let mut out = vec![(0.0, 0.0)];
    for (i, t) in v.iter().enumerate() {
        out.push((*t, i as f64 / runs as f64));
        out.push((*t, (i + 1) as f64 / runs as f64));
    }
    out.push((end_min, v.len() as f64 / runs.max(1) as f64));
    out
}

/// A white SVG canvas of `size` pixels at `path`.
fn canvas(path: &Path, size: (u32, u32)) -> anyhow::Result<Area<'_>> {
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    Ok(root)
}

/// A white SVG canvas with `title` on top in sans-serif of `font` points; the area below it.
fn titled_canvas<'a>(path: &'a Path, size: (u32, u32), title: &str, font: u32) -> anyhow::Result<Area<'a>> {
    canvas(path, size)?
        .titled(title, ("sans-serif", font))
        .map_err(err)
}

fn aa(path: &Path, singles: &[SingleSummary]) -> anyhow::Result<()> {
    let rows: Vec<&SingleSummary> = singles.iter().filter(|s| s.scenario.id == "S0").collect();
    if rows.is_empty() {
        return Ok(());
    }
    let ci = |a: &ArmSummary| clopper_pearson(a.rollbacks as u64, a.runs as u64);
    // The tightened Flagger (30–100%) is left to the table: it would flatten everything else.
    let top = rows
        .iter()
        .flat_map(|r| [ci(&r.judge).1, ci(&r.flagger).1, ci(&r.kayenta).1])
        .fold(0.1f64, f64::max)
        * 1.05;
    let root = titled_canvas(
        path,
        (1000, 420),
        "S0: A/A false rollbacks in 30 minutes, 95% intervals (tightened Flagger: 30–100%, see the table)",
        16,
    )?;
    let mut rates: Vec<f64> = rows.iter().map(|r| r.scenario.rps).collect();
    rates.dedup();
    let arms: [ArmLine; 3] = [
        ("J judge", J, -0.2, |s| &s.judge),
        ("F Flagger", F, 0.0, |s| &s.flagger),
        ("K Kayenta-like", K, 0.2, |s| &s.kayenta),
    ];
    let panels = root.split_evenly((1, rates.len()));
    for (i, (area, rps)) in panels.iter().zip(&rates).enumerate() {
        let group: Vec<&&SingleSummary> = rows.iter().filter(|r| r.scenario.rps == *rps).collect();
        let labels: Vec<String> = group.iter().map(|r| r.scenario.variant.clone()).collect();
        let n = group.len();
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{rps} req/s"), ("sans-serif", 14))
            .margin(6)
            .x_label_area_size(30)
            .y_label_area_size(if i == 0 { 45 } else { 8 })
            .build_cartesian_2d(-0.5f64..n as f64 - 0.5, 0f64..top)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_labels(n)
            .disable_x_mesh()
            .x_label_formatter(&|x| {
                let k = x.round();
                if (x - k).abs() < 1e-6 && k >= 0.0 && (k as usize) < labels.len() {
                    labels[k as usize].clone()
                } else {
                    String::new()
                }
            })
            .x_label_style(("sans-serif", 10))
            .y_label_formatter(&|y| {
                if i == 0 {
                    format!("{:.0}%", y * 100.0)
                } else {
                    String::new()
                }
            })
            .draw()
            .map_err(err)?;
        let alpha = chart
            .draw_series(LineSeries::new(
                [(-0.5, 0.05), (n as f64 - 0.5, 0.05)],
                GREY.stroke_width(1),
            ))
            .map_err(err)?;
        if i == 0 {
            alpha
                .label("α = 5%")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREY));
        }
        for (name, color, dx, pick) in arms {
            let series = chart
                .draw_series(group.iter().enumerate().map(|(k, r)| {
                    let a = pick(r);
                    let (lo, hi) = ci(a);
                    ErrorBar::new_vertical(k as f64 + dx, lo, a.rollback_rate(), hi, color.filled(), 6)
                }))
                .map_err(err)?;
            if i == 0 {
                series
                    .label(name)
                    .legend(move |(x, y)| Circle::new((x + 10, y), 4, color.filled()));
            }
        }
        if i == 0 {
            legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
        }
    }
    root.present().map_err(err)
}

type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Axes for "share of runs by then": minutes on x, percent on y.
fn share_axes<'a, 'b: 'a>(
    area: &'a Area<'b>,
    caption: &str,
    font: u32,
    x_end: f64,
    x_desc: &str,
) -> anyhow::Result<Chart<'a, 'b>> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", font))
        .margin(8)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..x_end, 0f64..1.02)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_label_formatter(&|y| format!("{:.0}%", y * 100.0))
        .draw()
        .map_err(err)?;
    Ok(chart)
}

/// The share of `runs` with a time at or before t, as a labelled step line.
fn ecdf_line(
    chart: &mut Chart<'_, '_>,
    times: &[f64],
    runs: usize,
    label: &str,
    color: RGBColor,
) -> anyhow::Result<()> {
    let end = chart.x_range().end;
    chart
        .draw_series(LineSeries::new(ecdf(times, runs, end), color.stroke_width(2)))
        .map_err(err)?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    Ok(())
}

fn legend<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>, position: SeriesLabelPosition) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(position)
        .draw()
        .map_err(err)
}

fn ecdf_panel(area: &Area<'_>, title: &str, s: &SingleSummary) -> anyhow::Result<()> {
    let mut chart = share_axes(area, title, 15, s.scenario.horizon_min.min(10.0), "minutes")?;
    let arms: [(&str, RGBColor, &ArmSummary); 4] = [
        ("J", J, &s.judge),
        ("F", F, &s.flagger),
        ("T", T, &s.tight),
        ("K", K, &s.kayenta),
    ];
    for (name, color, a) in arms {
        ecdf_line(&mut chart, &a.rollback_times, a.runs, name, color)?;
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)
}

fn detection(path: &Path, singles: &[SingleSummary]) -> anyhow::Result<()> {
    let pick = |id: &str, variant: &str| {
        singles
            .iter()
            .find(|s| s.scenario.id == id && s.scenario.variant == variant && s.scenario.rps == 200.0)
    };
    let panels = [
        ("S1: errors 0.1% → 0.5%", pick("S1", "")),
        ("S3: p99 +20 ms, 200 ms bound", pick("S3", "200ms bound")),
        ("S4: latency ×1.1", pick("S4", "")),
        ("S5: errors 0.1% → 5%", pick("S5", "")),
    ];
    if panels.iter().all(|(_, s)| s.is_none()) {
        return Ok(());
    }
    let root = titled_canvas(
        path,
        (960, 640),
        "Detection time at 200 req/s (share of runs rolled back by then)",
        18,
    )?;
    for (area, (title, s)) in root.split_evenly((2, 2)).iter().zip(panels) {
        if let Some(s) = s {
            ecdf_panel(area, title, s)?;
        }
    }
    root.present().map_err(err)
}

fn promote(path: &Path, singles: &[SingleSummary]) -> anyhow::Result<()> {
    let good: Vec<&SingleSummary> = singles
        .iter()
        .filter(|s| s.scenario.id == "S6" && s.scenario.variant == "good")
        .collect();
    if good.is_empty() {
        return Ok(());
    }
    let root = canvas(path, (800, 420))?;
    let caption = "S6: time to promote a good release (share of runs promoted by then)";
    let mut chart = share_axes(&root, caption, 18, 10.0, "minutes")?;
    let shades = [
        RGBColor(158, 202, 225),
        RGBColor(66, 146, 198),
        RGBColor(8, 69, 148),
    ];
    for (s, color) in good.iter().zip(shades) {
        let label = format!("judge, {} req/s", s.scenario.rps);
        ecdf_line(&mut chart, &s.judge.promote_times, s.judge.runs, &label, color)?;
    }
    if let Some(s) = good.iter().find(|s| s.scenario.rps == 200.0) {
        ecdf_line(
            &mut chart,
            &s.flagger.promote_times,
            s.flagger.runs,
            "Flagger, 200 req/s",
            F,
        )?;
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    root.present().map_err(err)
}

fn fleet(path: &Path, fleets: &[FleetSummary]) -> anyhow::Result<()> {
    if fleets.is_empty() {
        return Ok(());
    }
    let end = WAVES.len() as f64 * WAVE_S / 60.0;
    let root = canvas(path, (900, 440))?;
    let caption = "S7: fleet rollouts stopped by then (waves of 1/3/6/10 clusters)";
    let mut chart = share_axes(&root, caption, 18, end, "minutes since the first wave started")?;
    for w in 1..WAVES.len() {
        let x = w as f64 * WAVE_S / 60.0;
        chart
            .draw_series(LineSeries::new([(x, 0.0), (x, 1.02)], GREY.stroke_width(1)))
            .map_err(err)?;
    }
    let lines: [FleetLine; 7] = [
        ("0.1→0.3%", "pooled, 0.1→0.3%", RGBColor(8, 69, 148), |r| {
            r.pooled
        }),
        ("0.1→0.2%", "pooled, 0.1→0.2%", J, |r| r.pooled),
        (
            "0.1→0.2%",
            "pooled anytime evidence alone (no planned look), 0.1→0.2%",
            RGBColor(44, 160, 44),
            |r| r.anytime,
        ),
        (
            "0.1→0.2%",
            "oracle knowing r = 2 (bound for anytime tests)",
            RGBColor(148, 103, 189),
            |r| r.oracle,
        ),
        (
            "0.1→0.2%",
            "any cluster alone (each at α), 0.1→0.2%",
            T,
            |r| r.any_cluster,
        ),
        ("0.1→0.2%", "Flagger, 0.1→0.2%", F, |r| r.flagger),
        ("A/A", "pooled, A/A (false)", GREY, |r| r.pooled),
    ];
    for (variant, label, color, pick) in lines {
        if let Some(s) = fleets.iter().find(|f| f.scenario.variant == variant) {
            ecdf_line(&mut chart, &s.times(pick), s.runs, label, color)?;
        }
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.present().map_err(err)
}
