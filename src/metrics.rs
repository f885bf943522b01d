//! The training curves, for other tools: `--metrics FILE.csv` writes one row per progress
//! line, `--plot FILE.png|svg` draws them.

use std::path::Path;

use plotters::coord::Shift;
use plotters::drawing::DrawingArea;
use plotters::prelude::DrawingBackend;

use crate::error::Result;
use crate::model_file::write_atomically;
use crate::plot;
use crate::train::Progress;

/// The CSV's columns, in order. The train columns are means over the steps since the previous
/// row (weighted by batch length), not one batch's numbers; the dev columns are the whole dev
/// set's at the row's step.
pub const COLUMNS: [&str; 8] = [
    "step",
    "epoch",
    "alpha",
    "train_loss_mean",
    "train_accuracy_mean",
    "dev_loss",
    "dev_accuracy",
    "samples_per_second",
];

/// Writes the history as CSV (empty fields where a value does not exist, such as the dev
/// accuracy without a dev set), whole or not at all.
pub fn write_csv(path: &Path, history: &[Progress]) -> Result<()> {
    let optional = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
    let mut text = COLUMNS.join(",") + "\n";
    for p in history {
        let row = [
            p.step.to_string(),
            p.epoch.map_or(String::new(), |e| e.to_string()),
            p.alpha.to_string(),
            p.batch.loss.to_string(),
            p.batch.accuracy.to_string(),
            optional(p.dev_loss),
            optional(p.dev_accuracy),
            format!("{:.0}", p.samples_per_second),
        ];
        text += &(row.join(",") + "\n");
    }
    write_atomically(path, text.as_bytes())
}

/// Draws the history in two panels against the step: the train (mean since the previous
/// point) and dev loss, and the train (mean) and dev accuracy. SVG or PNG by the file name.
pub fn plot(path: &Path, history: &[Progress]) -> Result<()> {
    use plotters::prelude::*;
    plot::register_font(path)?;
    let size = (1000, 420);
    match plot::format(path)? {
        plot::Format::Svg => draw(SVGBackend::new(path, size).into_drawing_area(), history),
        plot::Format::Png => draw(BitMapBackend::new(path, size).into_drawing_area(), history),
    }
    .map_err(|e| plot::failed(path, e))
}

/// The figure: the loss on the left, the accuracy on the right, both against the step.
fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    history: &[Progress],
) -> std::result::Result<(), String> {
    use plotters::prelude::*;
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    if history.is_empty() {
        return Err("no progress was recorded, so there is nothing to draw".into());
    }
    root.fill(&WHITE).map_err(e)?;
    let (left, right) = root.split_horizontally(500);
    let last_step = history.last().map_or(1, |p| p.step).max(2) as f64;
    draw_loss(&left, history, last_step)?;
    draw_accuracy(&right, history, last_step)?;
    root.present().map_err(e)?;
    Ok(())
}

/// The train (mean) and dev loss against the step, from 0 to a little above the highest.
fn draw_loss<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    history: &[Progress],
    last_step: f64,
) -> std::result::Result<(), String> {
    let train = curve(history, |p| Some(p.batch.loss));
    let dev = curve(history, |p| p.dev_loss);
    let highest = train
        .iter()
        .chain(&dev)
        .map(|p| p.1)
        .filter(|l| l.is_finite());
    let top = highest.fold(0.0, f64::max) * 1.05;
    let panel = Panel {
        caption: "loss",
        y_desc: "cross-entropy",
        y_max: top.max(1e-3),
        train_color: (214, 39, 40),
        dev_label: "dev loss",
        legend_below: false,
    };
    panel.draw(area, last_step, train, dev)
}

/// The train (mean) and dev accuracy against the step, from 0 to 1.
fn draw_accuracy<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    history: &[Progress],
    last_step: f64,
) -> std::result::Result<(), String> {
    let panel = Panel {
        caption: "accuracy",
        y_desc: "fraction correct",
        y_max: 1.0,
        train_color: (31, 119, 180),
        dev_label: "dev",
        legend_below: true,
    };
    let train = curve(history, |p| Some(p.batch.accuracy));
    panel.draw(area, last_step, train, curve(history, |p| p.dev_accuracy))
}

/// (step, value) for every progress line that has the value.
fn curve(history: &[Progress], value: impl Fn(&Progress) -> Option<f64>) -> Vec<(f64, f64)> {
    history
        .iter()
        .filter_map(|p| Some((p.step as f64, value(p)?)))
        .collect()
}

/// One panel of the figure: the train curve (mean since the previous point) and, where there
/// is a dev set, the dev curve (always green), against the step.
struct Panel {
    caption: &'static str,
    y_desc: &'static str,
    /// The y axis runs from 0 to this.
    y_max: f64,
    train_color: (u8, u8, u8),
    dev_label: &'static str,
    /// The legend in the lower right corner (rising curves), else the upper right.
    legend_below: bool,
}

impl Panel {
    fn draw<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        last_step: f64,
        train: Vec<(f64, f64)>,
        dev: Vec<(f64, f64)>,
    ) -> std::result::Result<(), String> {
        use plotters::prelude::*;
        let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        let font = (plot::FAMILY, 15);
        let (r, g, b) = self.train_color;
        let train_color = RGBColor(r, g, b);
        let green = RGBColor(44, 160, 44);
        let mut chart = ChartBuilder::on(area)
            .caption(self.caption, (plot::FAMILY, 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..last_step, 0.0..self.y_max)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc("step")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_desc(self.y_desc)
            .label_style(font)
            .draw()
            .map_err(e)?;
        let mut series = vec![("train (mean)", train, train_color)];
        if !dev.is_empty() {
            series.push((self.dev_label, dev, green));
        }
        for (label, points, color) in series {
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(e)?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        let position = if self.legend_below {
            SeriesLabelPosition::LowerRight
        } else {
            SeriesLabelPosition::UpperRight
        };
        chart
            .configure_series_labels()
            .position(position)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font(font)
            .draw()
            .map_err(e)?;
        Ok(())
    }
}
