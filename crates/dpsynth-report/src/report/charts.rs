//! Charts drawn with plotters' SVG backend, returned as SVG text to inline in HTML.

use plotters::prelude::*;

/// One line of the accuracy-vs-ε chart: its name and (x index, accuracy in [0, 1]) points.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(usize, f64)>,
}

const W: u32 = 640;
const H: u32 = 380;

fn palette(i: usize) -> RGBColor {
    const C: [RGBColor; 6] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
    ];
    C[i % C.len()]
}

/// Downstream accuracy vs ε: one line per method (synthetic data), the DP-SGD baseline trained
/// on real data (dashed grey), and the non-private real-data ceiling (a horizontal band line).
/// `x_labels` are the ε values in order (`1`, `3`, `8`, `∞`); points refer to their index.
pub fn accuracy_vs_epsilon(
    title: &str,
    x_labels: &[String],
    methods: &[Series],
    baseline: Option<&Series>,
    ceiling: Option<f64>,
) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let n = x_labels.len().max(1);
        let mut lo = 1.0f64;
        let all = methods
            .iter()
            .chain(baseline)
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .chain(ceiling);
        for y in all {
            lo = lo.min(y);
        }
        let lo = ((lo - 0.05).max(0.0) * 10.0).floor() / 10.0;
        let labels = x_labels.to_vec();
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), lo..1.0f64)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("ε (privacy budget; ∞ = non-private fine-tuning)")
            .y_desc("accuracy on real test data")
            .x_labels(n)
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 {
                    labels.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, s) in methods.iter().enumerate() {
            let c = palette(i);
            let pts: Vec<(f64, f64)> = s.points.iter().map(|&(x, y)| (x as f64, y)).collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(format!("synthetic ({})", s.name))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))
                .map_err(|e| e.to_string())?;
        }
        if let Some(b) = baseline {
            let c = RGBColor(90, 90, 90);
            let pts: Vec<(f64, f64)> = b.points.iter().map(|&(x, y)| (x as f64, y)).collect();
            chart
                .draw_series(DashedLineSeries::new(pts.clone(), 6, 4, c.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(b.name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
            chart
                .draw_series(pts.iter().map(|&p| TriangleMarker::new(p, 5, c.filled())))
                .map_err(|e| e.to_string())?;
        }
        if let Some(cy) = ceiling {
            let c = RGBColor(0, 0, 0);
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(-0.5, cy - 0.002), (n as f64 - 0.5, cy + 0.002)],
                    c.filled(),
                )))
                .map_err(|e| e.to_string())?
                .label("real data, non-private (ceiling)")
                .legend(move |(x, y)| Rectangle::new([(x, y - 1), (x + 18, y + 1)], c.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// Training loss vs step.
pub fn loss_curve(points: &[(f64, f64)]) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, 300)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let finite: Vec<(f64, f64)> = points
            .iter()
            .copied()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .collect();
        let (x0, x1) = finite
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |a, p| {
                (a.0.min(p.0), a.1.max(p.0))
            });
        let (y0, y1) = finite
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |a, p| {
                (a.0.min(p.1), a.1.max(p.1))
            });
        let (x0, x1) = if x0.is_finite() && x1 > x0 {
            (x0, x1)
        } else {
            (0.0, 1.0)
        };
        let (y0, y1) = if y0.is_finite() && y1 > y0 {
            (y0 - 0.05 * (y1 - y0), y1 + 0.05 * (y1 - y0))
        } else if y0.is_finite() {
            (y0 - 0.5, y0 + 0.5)
        } else {
            (0.0, 1.0)
        };
        let mut chart = ChartBuilder::on(&root)
            .caption("DP fine-tuning loss", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(50)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("loss (noisy batches)")
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(LineSeries::new(finite, palette(0).stroke_width(2)))
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// Grouped bars: for each label, one bar per group (e.g. "DP histogram", "synthetic").
pub fn grouped_bars(
    title: &str,
    labels: &[String],
    groups: &[(String, Vec<f64>)],
) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, 300)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let n = labels.len().max(1);
        let g = groups.len().max(1);
        let ymax = groups
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .fold(0.0f64, f64::max)
            .max(1e-9)
            * 1.1;
        let lab = labels.to_vec();
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0.0..ymax)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n)
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 {
                    lab.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_desc("share of records")
            .draw()
            .map_err(|e| e.to_string())?;
        let width = 0.8 / g as f64;
        for (gi, (name, vals)) in groups.iter().enumerate() {
            let c = palette(gi);
            chart
                .draw_series(vals.iter().enumerate().map(|(i, &v)| {
                    let x0 = i as f64 - 0.4 + gi as f64 * width;
                    Rectangle::new([(x0, 0.0), (x0 + width * 0.95, v)], c.filled())
                }))
                .map_err(|e| e.to_string())?
                .label(name.clone())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_svg_and_escape_labels() {
        let s = accuracy_vs_epsilon(
            "acc <vs> ε",
            &["1".into(), "3".into(), "∞".into()],
            &[Series {
                name: "lora".into(),
                points: vec![(0, 0.6), (1, 0.7), (2, 0.8)],
            }],
            Some(&Series {
                name: "DP-SGD baseline".into(),
                points: vec![(0, 0.55), (1, 0.65)],
            }),
            Some(0.85),
        )
        .unwrap();
        assert!(s.starts_with("<svg"), "{}", &s[..40]);
        assert!(s.contains("acc &lt;vs&gt;"));
        assert!(!s.contains("<script"));
        let l = loss_curve(&[(0.0, 3.0), (1.0, 2.5), (2.0, f64::NAN)]).unwrap();
        assert!(l.contains("<polyline") || l.contains("<path"));
        // Degenerate inputs draw an empty chart, not a panic.
        loss_curve(&[]).unwrap();
        loss_curve(&[(5.0, 1.0)]).unwrap();
        let b = grouped_bars("labels", &["a<b".into()], &[("x".into(), vec![0.0])]).unwrap();
        assert!(b.contains("a&lt;b"));
        accuracy_vs_epsilon("empty", &[], &[], None, None).unwrap();
    }
}
