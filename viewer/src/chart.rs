//! The dataflow chart: for each [N, K] linear shape, device time against M for A (GEMV), B
//! (flat GEMM) and C (GEMM), each variant a curve, from `fdpp bench kernels --json` or a
//! tuned profile, with the thresholds M1 and M2 the table gives (the profile's own, else the
//! table in use) and the ones the measurement shows.

use eframe::egui;
use egui_plot::{Legend, Line, Plot, VLine};
use fdpp_runtime::backend::microbench::{KernelReport, LinearTiming};
use fdpp_runtime::dataflow::{DataflowTable, LinearImpl};
use fdpp_runtime::tune::profile::DeviceProfile;

/// Linear timings to draw, and the table that goes with them, if the file has one.
pub struct Curves {
    pub heading: String,
    pub linear: Vec<LinearTiming>,
    pub table: Option<DataflowTable>,
}

impl Curves {
    pub fn of_report(r: KernelReport) -> Curves {
        let heading =
            format!("{}: read ceiling {:.0} GB/s, dispatch floor {:.1} us", r.device, r.read_gbytes_per_s, r.dispatch_floor_micros);
        Curves { heading, linear: r.linear, table: None }
    }

    /// The profile's verification pass where it has one (what its scores are from).
    pub fn of_profile(p: DeviceProfile) -> Curves {
        let (points, within) = p.summary.iter().fold((0, 0), |(a, b), s| (a + s.tuned.points, b + s.tuned.within_5pct));
        let heading = format!(
            "tuned profile of {} ({} weights, {}, measured {}): tuned choice within 5% of the fastest at {within} of {points} points",
            p.key.device, p.key.weights, p.key.driver, p.created
        );
        let linear = if p.verification.is_empty() { p.linear } else { p.verification };
        Curves { heading, linear, table: Some(p.table) }
    }
}

/// Where the measured times put the thresholds: M1, the first M at which A (GEMV) is not
/// the fastest, and M2, the first at which C (GEMM) is.
pub fn measured_inflections(timings: &[&LinearTiming]) -> (Option<usize>, Option<usize>) {
    let mut ms: Vec<usize> = timings.iter().map(|t| t.m).collect();
    ms.sort_unstable();
    ms.dedup();
    let best = |m: usize| timings.iter().filter(|t| t.m == m).min_by(|a, b| a.micros.total_cmp(&b.micros)).map(|t| t.implementation);
    let m1 = ms.iter().copied().find(|&m| best(m).is_some_and(|b| b != LinearImpl::Gemv));
    let m2 = ms.iter().copied().find(|&m| best(m) == Some(LinearImpl::Gemm));
    (m1, m2)
}

/// The curve a timing belongs to: its variant with its parameters (reports that do not
/// name it: its implementation).
fn curve_name(t: &LinearTiming) -> String {
    t.variant.map_or_else(|| t.implementation.label().to_string(), |v| v.to_string())
}

/// The curves of some timings, in the order first measured.
fn curve_names(timings: &[&LinearTiming]) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    for t in timings {
        let name = curve_name(t);
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// The [N, K] shapes of some timings, in the order measured.
pub fn shapes(linear: &[LinearTiming]) -> Vec<(usize, usize)> {
    let mut out = vec![];
    for t in linear {
        if !out.contains(&(t.n, t.k)) {
            out.push((t.n, t.k));
        }
    }
    out
}

pub fn show(ui: &mut egui::Ui, curves: Option<&Curves>, live_table: Option<&DataflowTable>) {
    let Some(curves) = curves else {
        ui.label(
            "Open the JSON of `fdpp bench kernels --json FILE` or `fdpp tune --json FILE` (or the profile in the cache) to see A, B and C against M for each linear shape.",
        );
        return;
    };
    ui.label(&curves.heading);
    let table = curves.table.as_ref().or(live_table);
    egui::ScrollArea::vertical().show(ui, |ui| {
        for (n, k) in shapes(&curves.linear) {
            let timings: Vec<&LinearTiming> = curves.linear.iter().filter(|t| t.n == n && t.k == k).collect();
            let (m1, m2) = measured_inflections(&timings);
            let shown = |v: Option<usize>| v.map_or("-".to_string(), |m| m.to_string());
            let mut title = format!("[N={n}, K={k}]: measured M1 = {}, M2 = {}", shown(m1), shown(m2));
            let table_inf = table.map(|t| (t.inflections(n, k), t.source.clone()));
            if let Some(((inf, listed), source)) = &table_inf {
                title += &format!("; table ({source}{}): M1 = {}, M2 = {}", if *listed { "" } else { ", fallback" }, inf.m1, inf.m2);
            }
            let entry = table.and_then(|t| t.shape(n, k));
            if let Some(tiling) = entry.and_then(|s| s.flat) {
                title += &format!(", B tile {tiling}");
            }
            for later in entry.map_or(&[][..], |s| &s.flat_later) {
                title += &format!(" then {} from M = {}", later.tiling, later.from_m);
            }
            ui.label(title);
            // Both axes logarithmic: M spans 1..hundreds and the times a factor of ten.
            let at = |m: usize| (m as f64).log2();
            Plot::new(("dataflow", n, k))
                .height(180.0)
                .legend(Legend::default())
                .x_axis_label("M (token rows, log scale)")
                .y_axis_label("us per call (log scale)")
                .x_axis_formatter(|mark, _| format!("{:.0}", mark.value.exp2()))
                .y_axis_formatter(|mark, _| format!("{:.0}", 10f64.powf(mark.value)))
                .show(ui, |p| {
                    // A line per variant (B in each tiling, A with and without split-K).
                    for name in curve_names(&timings) {
                        let pts: Vec<[f64; 2]> =
                            timings.iter().filter(|t| curve_name(t) == name).map(|t| [at(t.m), t.micros.log10()]).collect();
                        p.line(Line::new(name, pts));
                    }
                    if let Some(m) = m1 {
                        p.vline(VLine::new("measured M1", at(m)));
                    }
                    if let Some(m) = m2 {
                        p.vline(VLine::new("measured M2", at(m)));
                    }
                    if let Some(((inf, _), _)) = &table_inf {
                        p.vline(VLine::new("table M1", at(inf.m1.max(1))));
                        p.vline(VLine::new("table M2", at(inf.m2.clamp(1, 1 << 16))));
                    }
                });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use fdpp_runtime::lower::kernel::Variant;

    fn t(m: usize, implementation: LinearImpl, micros: f64) -> LinearTiming {
        let lin = fdpp_runtime::lower::caps::BackendCaps::wgpu_builtin().linear;
        let variant = match implementation {
            LinearImpl::Gemv => Variant::Gemv { split_k: false, per_warp: false },
            LinearImpl::FlatGemm => Variant::FlatGemm { tiling: lin.flat_tilings[0] },
            LinearImpl::Gemm => Variant::Gemm { tile: lin.gemm_tile },
        };
        LinearTiming::new(64, 64, m, variant, micros, 2, 1000.0)
    }

    #[test]
    fn thresholds_are_where_a_stops_and_c_starts_being_fastest() {
        use LinearImpl::*;
        let all = [
            t(1, Gemv, 1.0),
            t(1, FlatGemm, 2.0),
            t(1, Gemm, 3.0),
            t(4, Gemv, 3.0),
            t(4, FlatGemm, 2.0),
            t(4, Gemm, 2.5),
            t(16, Gemv, 9.0),
            t(16, FlatGemm, 4.0),
            t(16, Gemm, 3.0),
        ];
        let refs: Vec<&LinearTiming> = all.iter().collect();
        assert_eq!(measured_inflections(&refs), (Some(4), Some(16)));
        // A fastest everywhere: no threshold measured.
        let a_only: Vec<&LinearTiming> = all.iter().filter(|x| x.implementation == Gemv).collect();
        assert_eq!(measured_inflections(&a_only), (None, None));
    }
}
