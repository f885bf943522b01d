//! What `bench` shows of its measurements: the table, the GPU profiles, the JSON array
//! (`--json`), the log-log plot (`--plot`), and other tools' results read back (`--compare`).

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::drawing::DrawingArea;
use plotters::prelude::DrawingBackend;
use serde_json::{json, Value};

use super::{BenchOptions, Measurement};
use mnist_gpu::error::{Error, Result};
use mnist_gpu::gpu::GpuContext;
use mnist_gpu::plot;

/// Prints the table, the GPU profiles and a note on a software adapter; then writes the plot
/// and prints the JSON array, as `options` ask.
pub(super) fn print(
    options: &BenchOptions,
    results: &[Measurement],
    peers: &[Measurement],
    gpu: Option<&GpuContext>,
    network: &str,
    cpu_name: &str,
) -> Result<()> {
    println!();
    print!("{}", table(results, peers));
    if let (Some(ctx), true) = (gpu, options.profile) {
        print_profiles(results, ctx);
    }
    if let Some(ctx) = gpu.filter(|c| c.is_software()) {
        println!(
            "note: \"gpu\" ran on {}: a software rasterizer on the CPU cores, not a GPU",
            ctx.describe()
        );
    }
    if let Some(path) = &options.plot {
        let samples = options.samples;
        let title = format!("mnist-gpu training throughput, {network}, {samples} samples");
        let mut all = results.to_vec();
        all.extend(peers.iter().cloned());
        plot(path, &all, &title, cpu_name)?;
        println!("plot written to {}", path.display());
    }
    if options.json {
        let array: Vec<Value> = results.iter().map(|m| m.to_json(&options.hidden)).collect();
        println!("{}", Value::Array(array));
    }
    Ok(())
}

/// Each GPU measurement's time per kernel, or a line saying the adapter cannot time them.
fn print_profiles(results: &[Measurement], ctx: &GpuContext) {
    if results.iter().any(|m| m.profile.is_some()) {
        for m in results {
            print!("{}", profile_text(m));
        }
    } else {
        println!(
            "profile: {} has no timestamp queries (wgpu's TIMESTAMP_QUERY), so no GPU time per kernel",
            ctx.describe()
        );
    }
}

/// The results of other tools (`--compare`), every file's in turn.
pub(super) fn read_peers(paths: &[PathBuf]) -> Result<Vec<Measurement>> {
    let mut peers = Vec::new();
    for path in paths {
        peers.extend(read_results(path)?);
    }
    Ok(peers)
}

impl Measurement {
    fn to_json(&self, hidden: &[usize]) -> Value {
        json!({
            "backend": self.backend,
            "adapter": self.adapter,
            "software_adapter": self.software_adapter,
            "path": self.path,
            "matmul": self.matmul,
            "shader_checks": self.shader_checks,
            "coop_tile": self.coop_tile,
            "split_k": self.split_k,
            "forward_split_k": self.forward_split_k,
            "block": self.tiling.map(|t| t.block),
            "max_groups": self.tiling.map(|t| t.max_groups),
            "fused": self.tiling.map(|t| t.variant.names()),
            "batch_size": self.batch_size,
            "full_batch": self.full_batch,
            "samples": self.samples,
            "hidden": hidden,
            "steps": self.steps,
            "runs": self.runs,
            "seconds": self.seconds,
            "samples_per_second": self.samples_per_second,
            "augment_host_us_per_image": self.augment_host_us,
            "profile": self.profile.as_ref().map(|p| json!({
                "steps": p.steps,
                "gpu_seconds_per_step": p.gpu_seconds_per_step(),
                "dispatches_per_step": p.dispatches_per_step(),
                "kernels": p.kernels.iter().map(|(name, seconds, dispatches)| json!({
                    "kernel": name,
                    "seconds_per_step": seconds,
                    "dispatches_per_step": dispatches,
                })).collect::<Vec<_>>(),
            })),
        })
    }

    /// Reads an entry of another tool's JSON array; only the fields the table and plot use.
    fn from_json(v: &Value, source: &Path) -> Result<Measurement> {
        let bad = |field: &str| {
            Error::Config(format!(
                "{}: an entry has no valid {field:?}: {v}",
                source.display()
            ))
        };
        let text = |field: &str| {
            v[field]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| bad(field))
        };
        let count = |field: &str| {
            v[field]
                .as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| bad(field))
        };
        let rate = v["samples_per_second"]
            .as_f64()
            .filter(|r| r.is_finite() && *r > 0.0)
            .ok_or_else(|| bad("samples_per_second"))?;
        Ok(Measurement {
            backend: text("backend")?,
            adapter: text("adapter").unwrap_or_default(),
            software_adapter: v["software_adapter"].as_bool().unwrap_or(false),
            path: v["path"].as_str().unwrap_or_default().to_string(),
            matmul: v["matmul"].as_str().map(str::to_string),
            shader_checks: v["shader_checks"].as_str().map(str::to_string),
            coop_tile: v["coop_tile"].as_str().map(str::to_string),
            split_k: v["split_k"].as_u64().map(|n| n as usize),
            forward_split_k: v["forward_split_k"].as_u64().map(|n| n as usize),
            tiling: None,
            batch_size: count("batch_size")?,
            full_batch: v["full_batch"].as_bool().unwrap_or(false),
            samples: count("samples")?,
            steps: count("steps").unwrap_or(0),
            runs: count("runs").unwrap_or(0),
            seconds: v["seconds"].as_f64().unwrap_or(f64::NAN),
            samples_per_second: rate,
            profile: None,
            augment_host_us: v["augment_host_us_per_image"].as_f64(),
        })
    }

    /// The name in the table's first column and the plot's legend.
    fn label(&self) -> String {
        if self.software_adapter {
            format!("{} (software adapter)", self.backend)
        } else {
            self.backend.clone()
        }
    }
}

/// The profile as lines of text, beside the wall-clock time per step.
fn profile_text(m: &Measurement) -> String {
    let Some(p) = &m.profile else {
        return String::new();
    };
    let wall = m.seconds / m.steps as f64;
    let mut out = format!(
        "GPU time per step, batch {} ({} path, {} profiled steps; each dispatch timed in a pass of its own):\n",
        m.batch_size, m.path, p.steps
    );
    for (name, seconds, dispatches) in &p.kernels {
        out += &format!(
            "  {name:<20} {:>10.1} µs  {:>5.1}%  {dispatches:.0} per step\n",
            seconds * 1e6,
            100.0 * seconds / p.gpu_seconds_per_step()
        );
    }
    out += &format!(
        "  {:<20} {:>10.1} µs          {:.0} dispatches per step\n",
        "all kernels",
        p.gpu_seconds_per_step() * 1e6,
        p.dispatches_per_step()
    );
    out += &format!(
        "  {:<20} {:>10.1} µs per step (the timed runs)\n",
        "wall clock",
        wall * 1e6
    );
    out
}

/// A JSON array of results, as `--json` prints it (the last line holding a `[` is used, so a
/// whole saved stdout works too).
fn read_results(path: &Path) -> Result<Vec<Measurement>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('['))
        .ok_or_else(|| Error::Config(format!("{}: no JSON array in it", path.display())))?;
    let value: Value = serde_json::from_str(line)
        .map_err(|e| Error::Config(format!("{}: not a JSON array: {e}", path.display())))?;
    let entries = value
        .as_array()
        .ok_or_else(|| Error::Config(format!("{}: not a JSON array", path.display())))?;
    entries
        .iter()
        .map(|v| Measurement::from_json(v, path))
        .collect()
}

/// The results as a text table, batch size by batch size, with our CPU's rate divided by
/// each row's where both were measured at that batch size.
fn table(results: &[Measurement], peers: &[Measurement]) -> String {
    let mut rows: Vec<&Measurement> = results.iter().chain(peers).collect();
    // Stable: within a batch size, ours first in the order measured, then the peers.
    rows.sort_by_key(|m| m.batch_size);
    let width = rows
        .iter()
        .map(|m| m.label().len())
        .max()
        .unwrap_or(0)
        .max(7);
    let mut out = format!(
        "{:<width$}  {:>9}  {:>12}  {:>12}  {:>10}  adapter\n",
        "backend", "path", "batch", "samples/s", "cpu ÷ this"
    );
    for m in rows {
        let ours = results
            .iter()
            .find(|r| r.backend == "cpu" && r.batch_size == m.batch_size);
        let ratio = ours.map_or("".into(), |c| {
            format!("{:.2}×", c.samples_per_second / m.samples_per_second)
        });
        let batch = if m.full_batch {
            format!("full {}", m.batch_size)
        } else {
            m.batch_size.to_string()
        };
        out += &format!(
            "{:<width$}  {:>9}  {:>12}  {:>12.0}  {:>10}  {}\n",
            m.label(),
            m.path,
            batch,
            m.samples_per_second,
            ratio,
            m.adapter
        );
    }
    out
}

/// Draws samples/s against batch size, log-log, one line per backend, with notes below.
fn plot(path: &Path, results: &[Measurement], title: &str, machine: &str) -> Result<()> {
    use plotters::prelude::*;
    let failed = |e: String| plot::failed(path, e);
    plot::register_font(path)?;
    let size = (900, 560);
    match plot::format(path)? {
        plot::Format::Svg => draw(
            SVGBackend::new(path, size).into_drawing_area(),
            results,
            title,
            machine,
        ),
        plot::Format::Png => draw(
            BitMapBackend::new(path, size).into_drawing_area(),
            results,
            title,
            machine,
        ),
    }
    .map_err(failed)
}

/// The figure: the chart above, a line per note below.
fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    results: &[Measurement],
    title: &str,
    machine: &str,
) -> std::result::Result<(), String> {
    use plotters::prelude::*;
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let series = series(results);
    if series.is_empty() {
        return Err("nothing to plot".into());
    }
    let notes = notes(results, machine);
    let height = root.dim_in_pixel().1;
    let (chart_area, note_area) = root.split_vertically(height - 22 * notes.len() as u32 - 8);
    draw_chart(&chart_area, &series, title)?;
    for (i, note) in notes.iter().enumerate() {
        note_area
            .draw_text(
                note,
                &("sans-serif", 15).into_font().color(&BLACK),
                (16, 22 * i as i32),
            )
            .map_err(e)?;
    }
    root.present().map_err(e)?;
    Ok(())
}

/// One series per label, in order of first appearance, points (batch size, samples/s) sorted
/// by batch size.
fn series(results: &[Measurement]) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for m in results {
        let point = (m.batch_size as f64, m.samples_per_second);
        // Ours named as ours, next to the peers' "numpy", "pytorch-cpu".
        let label = match m.backend.as_str() {
            "cpu" | "gpu" => format!("mnist-gpu {}", m.label()),
            _ => m.label(),
        };
        match series.iter_mut().find(|(l, _)| *l == label) {
            Some((_, points)) => points.push(point),
            None => series.push((label, vec![point])),
        }
    }
    for (_, points) in &mut series {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    series
}

/// The lines under the chart: the machine, and what a software adapter is.
fn notes(results: &[Measurement], machine: &str) -> Vec<String> {
    let mut notes = vec![format!("machine: {machine}")];
    if results.iter().any(|m| m.software_adapter) {
        notes.push(
            "\"gpu (software adapter)\" is lavapipe, a software rasterizer running on the same CPU cores: not a GPU"
                .to_string(),
        );
    }
    notes
}

/// Both axes log-scaled, from a little below the smallest value to a little above the largest.
fn draw_chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    series: &[(String, Vec<(f64, f64)>)],
    title: &str,
) -> std::result::Result<(), String> {
    use plotters::prelude::*;
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let all = || series.iter().flat_map(|(_, p)| p.iter());
    let (x_min, x_max) = all().fold((f64::MAX, 1.0f64), |(lo, hi), p| (lo.min(p.0), hi.max(p.0)));
    let (y_min, y_max) = all().fold((f64::MAX, 1.0f64), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(78)
        .build_cartesian_2d(
            (x_min / 1.5..x_max * 1.5).log_scale(),
            // A decade of room below the lowest line for the legend.
            (y_min / 10.0..y_max * 2.0).log_scale(),
        )
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("batch size (samples per step)")
        .y_desc("training samples per second")
        .x_label_formatter(&|x| sparse(*x))
        .y_label_formatter(&|y| sparse(*y))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(e)?;
    // Colours that stay apart on white (plotters' palette starts with a pale yellow).
    const COLORS: [RGBColor; 6] = [
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(148, 103, 189),
        RGBColor(60, 60, 60),
    ];
    for (i, (label, points)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(e)?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(e)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(e)?;
    Ok(())
}

/// A log axis's label: only at 1, 2 and 5 times a power of ten, so that labels on a short
/// range do not run into each other.
fn sparse(v: f64) -> String {
    let mantissa = v / 10f64.powf(v.log10().floor());
    if [1.0, 2.0, 5.0, 10.0]
        .iter()
        .any(|m| (mantissa - m).abs() < 1e-6)
    {
        short(v)
    } else {
        String::new()
    }
}

/// 1500 → "1.5K", 2000000 → "2M": axis labels that fit.
fn short(v: f64) -> String {
    let (value, unit) = match v.abs() {
        a if a >= 1e6 => (v / 1e6, "M"),
        a if a >= 1e3 => (v / 1e3, "K"),
        _ => (v, ""),
    };
    let digits = if value.fract().abs() < 1e-9 || value.abs() >= 10.0 {
        0
    } else {
        1
    };
    format!("{value:.digits$}{unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_labels() {
        assert_eq!(short(64.0), "64");
        assert_eq!(short(1500.0), "1.5K");
        assert_eq!(short(60_000.0), "60K");
        assert_eq!(short(2_000_000.0), "2M");
        assert_eq!(sparse(2000.0), "2K");
        assert_eq!(sparse(700.0), "");
    }
}
