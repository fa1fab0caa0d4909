//! The dataflow chart: for each [N, K] linear shape, device time against M for A (GEMV), B
//! (flat GEMM) and C (GEMM), from `fdpp bench kernels --json`, with the thresholds M1 and
//! M2 the table in use gives and the ones the measurement shows.

use eframe::egui;
use egui_plot::{Legend, Line, Plot, VLine};
use fdpp_runtime::backend::microbench::{KernelReport, LinearTiming};
use fdpp_runtime::dataflow::{DataflowTable, LinearImpl};

/// Where the measured curves cross: the first M at which B beats A (M1) and C beats B (M2).
pub fn measured_inflections(timings: &[&LinearTiming]) -> (Option<usize>, Option<usize>) {
    let mut ms: Vec<usize> = timings.iter().map(|t| t.m).collect();
    ms.sort_unstable();
    ms.dedup();
    let time = |m: usize, imp: LinearImpl| timings.iter().find(|t| t.m == m && t.implementation == imp).map(|t| t.micros);
    let first =
        |a: LinearImpl, b: LinearImpl| ms.iter().copied().find(|&m| matches!((time(m, a), time(m, b)), (Some(ta), Some(tb)) if tb < ta));
    (first(LinearImpl::Gemv, LinearImpl::FlatGemm), first(LinearImpl::FlatGemm, LinearImpl::Gemm))
}

/// The [N, K] shapes of a report, in the order measured.
pub fn shapes(report: &KernelReport) -> Vec<(usize, usize)> {
    let mut out = vec![];
    for t in &report.linear {
        if !out.contains(&(t.n, t.k)) {
            out.push((t.n, t.k));
        }
    }
    out
}

pub fn show(ui: &mut egui::Ui, report: Option<&KernelReport>, table: Option<&DataflowTable>) {
    let Some(report) = report else {
        ui.label("Open the JSON of `fdpp bench kernels --json FILE` to see A, B and C against M for each linear shape.");
        return;
    };
    ui.label(format!(
        "{}: read ceiling {:.0} GB/s, dispatch floor {:.1} us",
        report.device, report.read_gbytes_per_s, report.dispatch_floor_micros
    ));
    egui::ScrollArea::vertical().show(ui, |ui| {
        for (n, k) in shapes(report) {
            let timings: Vec<&LinearTiming> = report.linear.iter().filter(|t| t.n == n && t.k == k).collect();
            let (m1, m2) = measured_inflections(&timings);
            let shown = |v: Option<usize>| v.map_or("-".to_string(), |m| m.to_string());
            let mut title = format!("[N={n}, K={k}]: measured M1 = {}, M2 = {}", shown(m1), shown(m2));
            let table_inf = table.map(|t| (t.inflections(n, k), t.source.clone()));
            if let Some(((inf, listed), source)) = &table_inf {
                title += &format!("; table ({source}{}): M1 = {}, M2 = {}", if *listed { "" } else { ", fallback" }, inf.m1, inf.m2);
            }
            ui.label(title);
            Plot::new(("dataflow", n, k))
                .height(180.0)
                .legend(Legend::default())
                .x_axis_label("M (token rows)")
                .y_axis_label("us per call")
                .show(ui, |p| {
                    for imp in [LinearImpl::Gemv, LinearImpl::FlatGemm, LinearImpl::Gemm] {
                        let pts: Vec<[f64; 2]> =
                            timings.iter().filter(|t| t.implementation == imp).map(|t| [t.m as f64, t.micros]).collect();
                        if !pts.is_empty() {
                            p.line(Line::new(imp.label(), pts));
                        }
                    }
                    if let Some(m) = m1 {
                        p.vline(VLine::new("measured M1", m as f64));
                    }
                    if let Some(m) = m2 {
                        p.vline(VLine::new("measured M2", m as f64));
                    }
                    if let Some(((inf, _), _)) = &table_inf {
                        p.vline(VLine::new("table M1", inf.m1 as f64));
                        p.vline(VLine::new("table M2", inf.m2.min(4096) as f64));
                    }
                });
        }
    });
}
