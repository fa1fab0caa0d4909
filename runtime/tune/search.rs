//! The tuner's decisions, from measurements alone: which parameters (B's tiling, or two
//! tilings split at some M; A's split-K) and which inflection points M1, M2 serve one [N, K]
//! best over the measured M grid, where to measure next (the paper's search: densest where
//! the choice changes), and how far any way of choosing lands from the fastest measured
//! variant at each point.

use serde::{Deserialize, Serialize};

use crate::backend::microbench::LinearTiming;
use crate::dataflow::{DataflowTable, FlatTiling, Inflections, LinearImpl, ShapeTuning, TilingFrom};
use crate::lower::caps::LinearKernels;
use crate::lower::kernel::Variant;
use crate::lower::linear_choice;

/// The measurements of one [N, K]: every variant timed at every M measured.
pub struct ShapeTimes<'a> {
    pub n: usize,
    pub k: usize,
    timings: Vec<&'a LinearTiming>,
    /// The Ms measured, ascending.
    pub ms: Vec<usize>,
}

impl<'a> ShapeTimes<'a> {
    pub fn new(all: &'a [LinearTiming], n: usize, k: usize) -> Self {
        let timings: Vec<&LinearTiming> = all.iter().filter(|t| (t.n, t.k) == (n, k) && t.variant.is_some()).collect();
        let mut ms: Vec<usize> = timings.iter().map(|t| t.m).collect();
        ms.sort_unstable();
        ms.dedup();
        ShapeTimes { n, k, timings, ms }
    }

    /// The time of `variant` at `m` (the fastest if it was measured more than once).
    pub fn time(&self, m: usize, variant: Variant) -> Option<f64> {
        self.timings.iter().filter(|t| t.m == m && t.variant == Some(variant)).map(|t| t.micros).min_by(f64::total_cmp)
    }

    /// The fastest variant measured at `m`, and its time.
    pub fn fastest(&self, m: usize) -> Option<(Variant, f64)> {
        self.fastest_of(m, |_| true)
    }

    /// The fastest variant measured at `m` of those `keep` accepts, and its time.
    pub fn fastest_of(&self, m: usize, keep: impl Fn(Variant) -> bool) -> Option<(Variant, f64)> {
        self.timings
            .iter()
            .filter_map(|t| t.variant.filter(|&v| t.m == m && keep(v)).map(|v| (v, t.micros)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
    }
}

/// Of `options`, the one whose times at `ms` add up to the least, each relative to the best
/// option there (so large M does not outweigh small); the first on ties. `variant(o, m)` is
/// what option `o` runs at `m`.
fn least_relative<T: Copy>(times: &ShapeTimes, ms: &[usize], options: &[T], variant: impl Fn(T, usize) -> Variant) -> Option<T> {
    let score = |o: T| -> f64 {
        ms.iter()
            .map(|&m| {
                let best = options.iter().filter_map(|&p| times.time(m, variant(p, m))).fold(f64::INFINITY, f64::min);
                times.time(m, variant(o, m)).map_or(f64::INFINITY, |t| t / best)
            })
            .sum()
    };
    let mut best: Option<(T, f64)> = None;
    for &o in options {
        let s = score(o);
        if s.is_finite() && best.is_none_or(|(_, b)| s < b) {
            best = Some((o, s));
        }
    }
    best.map(|(o, _)| o)
}

/// The table entry for one shape: A's split-K (from which M on) and B's tilings
/// (`flat_tilings`), each the best where its implementation wins (or everywhere it was
/// measured, if it wins nowhere), then the M1, M2 that lose least against the fastest
/// variant summed over the grid, each candidate judged by what the lowering would run with
/// it (`lower::linear_choice`). M1 and M2 fall on measured Ms; past the last one C is
/// assumed (prefill's many rows).
pub fn choose(times: &ShapeTimes, lin: &LinearKernels) -> Option<ShapeTuning> {
    let ms = &times.ms;
    let last = *ms.last()?;
    let winner = |m: usize| times.fastest(m).and_then(|(v, _)| v.dataflow());
    let wins = |imp: LinearImpl| -> Vec<usize> { ms.iter().copied().filter(|&m| winner(m) == Some(imp)).collect() };
    let measured = |variant: Variant| -> Vec<usize> { ms.iter().copied().filter(|&m| times.time(m, variant).is_some()).collect() };
    let or_measured = |w: Vec<usize>, v: Variant| if w.is_empty() { measured(v) } else { w };

    // Split-K from M = t on (t past the GEMV's rows: never); the fewest splits on ties.
    let gemv_ms = or_measured(wins(LinearImpl::Gemv), lin.gemv(times.k, false));
    let split_from = lin.gemv_split_k_min.and_then(|_| {
        let options: Vec<usize> = (1..=lin.gemv_max_m + 1).rev().collect();
        least_relative(times, &gemv_ms, &options, |from, m| lin.gemv(times.k, m >= from))
    });
    let flat_ms = or_measured(wins(LinearImpl::FlatGemm), Variant::FlatGemm { tiling: lin.flat_tilings[0] });
    let (tiling, later) = flat_tilings(times, &flat_ms, &lin.flat_tilings)?;

    let entry = |inflections| ShapeTuning {
        n: times.n,
        k: times.k,
        inflections,
        flat: Some(tiling),
        flat_later: later.clone(),
        gemv_split_k_from: split_from,
    };
    let cost = |inflections: Inflections| -> f64 {
        let table = DataflowTable { shapes: vec![entry(inflections)], ..DataflowTable::cpu_default() };
        ms.iter()
            .map(|&m| {
                let choice = linear_choice(&table, lin, times.n, times.k, m).0;
                let credit = if matches!(choice, Variant::Gemv { .. }) { 1.0 - GEMV_CREDIT } else { 1.0 };
                match (times.time(m, choice), times.fastest(m)) {
                    (Some(t), Some((_, best))) => t * credit / best,
                    _ => f64::INFINITY,
                }
            })
            .sum()
    };
    let bounds: Vec<usize> = ms.iter().copied().chain([last + 1]).collect();
    let mut best: Option<(Inflections, f64)> = None;
    for (i, &m1) in bounds.iter().enumerate() {
        for &m2 in &bounds[i..] {
            let inf = Inflections { m1, m2 };
            let c = cost(inf);
            if c.is_finite() && best.is_none_or(|(_, b)| c < b) {
                best = Some((inf, c));
            }
        }
    }
    Some(entry(best?.0))
}

/// B's tilings over `ms` (the Ms where B runs, ascending): a first tiling and later ones,
/// each from one of `ms` on, whose times add up to the least relative to the fastest tiling
/// at each M (so large M does not outweigh small), each switch charged
/// `TILING_SWITCH_MIN_GAIN`: a dynamic program over `ms`, as the fastest tiling may change
/// more than once (SmolLM2's [576, 576] on an H200: 8x16 with K over 16 up to M = 56, then
/// K over 8, then 16x16). Ties go to fewer switches and to the earlier tilings of `tilings`,
/// so the same timings always give the same answer. None if no choice was timed at every M.
pub fn flat_tilings(times: &ShapeTimes, ms: &[usize], tilings: &[FlatTiling]) -> Option<(FlatTiling, Vec<TilingFrom>)> {
    // relative[i][j]: tiling j at ms[i] over the fastest tiling there (infinite if untimed).
    let relative: Vec<Vec<f64>> = ms
        .iter()
        .map(|&m| {
            let row: Vec<f64> =
                tilings.iter().map(|&tiling| times.time(m, Variant::FlatGemm { tiling }).unwrap_or(f64::INFINITY)).collect();
            let best = row.iter().copied().fold(f64::INFINITY, f64::min);
            row.iter().map(|&t| if best.is_finite() { t / best } else { f64::INFINITY }).collect()
        })
        .collect();
    // cost[j]: the least cost of ms[..=i] ending in tiling j; came_from[i][j]: the tiling at
    // ms[i - 1] on that path.
    let mut cost: Vec<f64> = relative.first()?.clone();
    let mut came_from: Vec<Vec<usize>> = vec![(0..tilings.len()).collect()];
    for row in &relative[1..] {
        let (mut next, mut from) = (vec![], vec![]);
        for (j, &r) in row.iter().enumerate() {
            let switch = least((0..tilings.len()).filter(|&l| l != j).map(|l| (l, cost[l] + TILING_SWITCH_MIN_GAIN)));
            let (l, c) = match switch {
                Some((l, c)) if c < cost[j] => (l, c),
                _ => (j, cost[j]),
            };
            next.push(c + r);
            from.push(l);
        }
        cost = next;
        came_from.push(from);
    }
    let (mut j, _) = least(cost.iter().copied().enumerate())?;
    let mut at = vec![0; ms.len()];
    for i in (0..ms.len()).rev() {
        at[i] = j;
        j = came_from[i][j];
    }
    let later = (1..ms.len()).filter(|&i| at[i] != at[i - 1]).map(|i| TilingFrom { from_m: ms[i], tiling: tilings[at[i]] }).collect();
    Some((tilings[at[0]], later))
}

/// What each switch to another B tiling must win back, in time relative to the fastest
/// tiling summed over the Ms: a quarter of one M's time. Of the many ways to split the Ms
/// some beat one tiling by noise alone: on lavapipe, where two passes over one kernel differ
/// by 19-28% either way (10th and 90th percentile), tilings chosen for smaller gains lost
/// points in the verification pass; replayed on the H200 profiles of
/// bench/results/h200-2026-11-30-tune, every second tiling that helped gained more.
pub const TILING_SWITCH_MIN_GAIN: f64 = 0.25;

/// How much faster than the GEMV another variant must be measured to take its rows: a
/// margin for what timing one layer's launches back to back does not show. On an H200 a
/// tuned table that gave Llama-2-7B's QKV and gate/up at one row to the flat GEMM (2% faster
/// alone, timed without the fusions then) made batch-1 decode 23% slower (4356 -> 5375 us
/// per step, bench/results/h200-2026-11-30-session5/call2). The tuner now times each
/// variant with its fusions or the launches it leaves unfused; the margin stays until a
/// step measures it unneeded.
pub const GEMV_CREDIT: f64 = 0.05;

/// The option of least finite cost, the earliest on ties.
fn least<T>(options: impl Iterator<Item = (T, f64)>) -> Option<(T, f64)> {
    options.filter(|(_, cost)| cost.is_finite()).fold(None, |best, (option, cost)| match best {
        Some((_, b)) if b <= cost => best,
        _ => Some((option, cost)),
    })
}

/// Ms to measure next: the middle of the gap below each threshold of `entry` (M1, M2 and
/// where B changes tiling; between the measured M before it and the one it sits on), where
/// there is an M between them.
pub fn refine(times: &ShapeTimes, entry: &ShapeTuning) -> Vec<usize> {
    let mut out = vec![];
    for threshold in [entry.inflections.m1, entry.inflections.m2].into_iter().chain(entry.flat_later.iter().map(|s| s.from_m)) {
        let below = times.ms.iter().copied().filter(|&m| m < threshold).max();
        if let (Some(lo), true) = (below, times.ms.contains(&threshold)) {
            let mid = lo + (threshold - lo) / 2;
            if mid > lo && !out.contains(&mid) {
                out.push(mid);
            }
        }
    }
    out
}

/// How one way of choosing fares over the measured grid of a shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// Grid points where its choice was measured, and of them those within 5% of the
    /// fastest variant measured there.
    pub points: usize,
    pub within_5pct: usize,
    /// Of the points, those within 5% of the fastest variant the lowering may run there
    /// (`may_run`: C only from the backend's GEMM rows, A only up to the GEMV's); absent in
    /// profiles written before it was counted.
    #[serde(default)]
    pub within_5pct_of_runnable: Option<usize>,
    /// Its time over the fastest's, minus one, in percent: the mean over the points, and
    /// the worst point.
    pub mean_loss_pct: f64,
    pub worst_loss_pct: f64,
    pub worst_m: usize,
}

/// Whether the lowering may run `variant` over `m` rows of a linear layer on a backend with
/// `lin`: A up to the GEMV's rows (split-K where the backend has it), B in the backend's
/// tilings, C from the rows its GEMM starts at.
pub fn may_run(lin: &LinearKernels, m: usize, variant: Variant) -> bool {
    match variant {
        Variant::Gemv { split_k, per_warp } => {
            m <= lin.gemv_max_m && (!split_k || lin.gemv_split_k_min.is_some()) && (!per_warp || lin.gemv_per_warp_max_k.is_some())
        }
        Variant::FlatGemm { tiling } => lin.flat_tilings.contains(&tiling),
        Variant::Gemm { .. } => m >= lin.gemm_min_m,
        _ => false,
    }
}

/// The score of `choose` (the variant it runs at each M) over `times`, against the fastest
/// variant measured at each M and against the fastest the lowering may run there on `lin`.
pub fn score(times: &ShapeTimes, lin: &LinearKernels, choose: impl Fn(usize) -> Variant) -> Score {
    let mut s = Score { points: 0, within_5pct: 0, within_5pct_of_runnable: Some(0), mean_loss_pct: 0.0, worst_loss_pct: 0.0, worst_m: 0 };
    let loss_pct = |t: f64, best: f64| 100.0 * (t / best - 1.0);
    for &m in &times.ms {
        let (Some(t), Some((_, best))) = (times.time(m, choose(m)), times.fastest(m)) else { continue };
        let loss = loss_pct(t, best);
        s.points += 1;
        s.within_5pct += usize::from(loss <= 5.0);
        let runnable = times.fastest_of(m, |v| may_run(lin, m, v));
        if let (Some(count), Some((_, best))) = (&mut s.within_5pct_of_runnable, runnable) {
            *count += usize::from(loss_pct(t, best) <= 5.0);
        }
        s.mean_loss_pct += loss;
        if loss > s.worst_loss_pct || s.points == 1 {
            s.worst_loss_pct = loss;
            s.worst_m = m;
        }
    }
    s.mean_loss_pct /= s.points.max(1) as f64;
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lower::caps::BackendCaps;

    /// Timings of a made-up device: A costs 10 + 4m (split-K 10% faster from K = 4096), B
    /// 14 + m in its best tiling (the others 20% slower), C 40 + m / 8.
    fn synthetic(lin: &LinearKernels, n: usize, k: usize, ms: &[usize]) -> Vec<LinearTiming> {
        let mut out = vec![];
        for &m in ms {
            for v in crate::backend::microbench::linear_candidates(lin, k, m) {
                let mf = m as f64;
                let micros = match v {
                    Variant::Gemv { split_k, .. } => (10.0 + 4.0 * mf) * if split_k == (k >= 4096) { 0.9 } else { 1.0 },
                    Variant::FlatGemm { tiling } => (14.0 + mf) * if tiling == lin.flat_tilings[2] { 1.0 } else { 1.2 },
                    _ => 40.0 + mf / 8.0,
                };
                out.push(LinearTiming::new(n, k, m, v, micros, 2, 1000.0));
            }
        }
        out
    }

    #[test]
    fn the_entry_follows_the_measured_crossings_and_parameters() {
        let lin = BackendCaps::wgpu_builtin().linear;
        let grid = [1, 2, 3, 4, 5, 6, 7, 8, 16, 32, 64, 128];
        let all = synthetic(&lin, 576, 4096, &grid);
        let times = ShapeTimes::new(&all, 576, 4096);
        let e = choose(&times, &lin).unwrap();
        assert_eq!(e.flat, Some(lin.flat_tilings[2]));
        // Split-K is 10% faster at every M here (K = 4096): from the first row on.
        assert_eq!(e.gemv_split_k_from, Some(1));
        let a = |m: f64| 0.9 * (10.0 + 4.0 * m);
        let b = |m: f64| 14.0 + m;
        let c = |m: f64| 40.0 + m / 8.0;
        // B is faster alone from M = 2 (1.2%), by more than the GEMV's credit from M = 3.
        let m1 = grid.iter().copied().find(|&m| b(m as f64) < (1.0 - GEMV_CREDIT) * a(m as f64)).unwrap();
        assert_eq!((grid.iter().copied().find(|&m| b(m as f64) < a(m as f64)), m1), (Some(2), 3));
        let m2 = grid.iter().copied().find(|&m| c(m as f64) < b(m as f64)).unwrap();
        assert_eq!(e.inflections, Inflections { m1, m2 });
        // The crossing of B and C lies between 16 and 32 (at 29.7): measure 24 next.
        assert_eq!(m2, 32);
        assert_eq!(refine(&times, &e), vec![24]);
        // Scored against the same measurements, the entry's choice is the fastest everywhere.
        let mut table = crate::dataflow::DataflowTable::wgpu_default();
        table.shapes.push(e);
        let s = score(&times, &lin, |m| crate::lower::linear_choice(&table, &lin, 576, 4096, m).0);
        assert_eq!((s.points, s.within_5pct), (grid.len(), grid.len()));
        assert!(s.worst_loss_pct < 100.0 * GEMV_CREDIT, "{s:?}");
        // Always C loses most at M = 1.
        let always_c = score(&times, &lin, |_| Variant::Gemm { tile: lin.gemm_tile });
        assert_eq!(always_c.worst_m, 1);
        assert!(always_c.worst_loss_pct > 100.0);
    }

    #[test]
    fn a_second_tiling_needs_more_than_noise_to_be_named() {
        let lin = BackendCaps::wgpu_builtin().linear;
        let (t, ms) = (&lin.flat_tilings, [2, 4, 8, 16, 32]);
        // Tiling 2 costs 10 + m, the others 20% more, except tiling 0 from M = 16 on, which
        // is `lead` times as fast as tiling 2 there.
        let tilings_with = |lead: f64| {
            let mut all = vec![];
            for m in ms {
                for (i, &tiling) in t.iter().enumerate() {
                    let base = 10.0 + m as f64;
                    let micros = match i {
                        2 => base,
                        0 if m >= 16 => base / lead,
                        _ => 1.2 * base,
                    };
                    all.push(LinearTiming::new(576, 576, m, Variant::FlatGemm { tiling }, micros, 2, 1000.0));
                }
            }
            all
        };
        // 10% at two Ms (20% of one M's time in all): within the noise, one tiling.
        let all = tilings_with(1.1);
        assert_eq!(flat_tilings(&ShapeTimes::new(&all, 576, 576), &ms, t), Some((t[2], vec![])));
        // 20% at two Ms: the second from 16 on.
        let all = tilings_with(1.2);
        let second = TilingFrom { from_m: 16, tiling: t[0] };
        assert_eq!(flat_tilings(&ShapeTimes::new(&all, 576, 576), &ms, t), Some((t[2], vec![second])));
        // Nothing timed: no choice.
        assert_eq!(flat_tilings(&ShapeTimes::new(&[], 576, 576), &ms, t), None);
    }

    #[test]
    fn b_follows_the_fastest_tiling_through_each_change_worth_a_switch() {
        let lin = BackendCaps::wgpu_builtin().linear;
        let t = &lin.flat_tilings;
        let ms = [1, 2, 4, 8, 16, 32, 64, 128, 256];
        // Tiling 0 is fastest up to M = 8, tiling 1 for 16-64, tiling 2 from 128, each by
        // 30% over the others; tiling 3 is 3% faster than tiling 1 at M = 32 alone (noise).
        let mut all = vec![];
        for m in ms {
            let lead = if m <= 8 {
                0
            } else if m <= 64 {
                1
            } else {
                2
            };
            for (i, &tiling) in t.iter().enumerate() {
                let base = 10.0 + m as f64;
                let micros = match i {
                    _ if i == lead => base,
                    3 if m == 32 => base / 1.03,
                    _ => 1.3 * base,
                };
                all.push(LinearTiming::new(576, 576, m, Variant::FlatGemm { tiling }, micros, 2, 1000.0));
            }
        }
        let times = ShapeTimes::new(&all, 576, 576);
        let later = vec![TilingFrom { from_m: 16, tiling: t[1] }, TilingFrom { from_m: 128, tiling: t[2] }];
        assert_eq!(flat_tilings(&times, &ms, t), Some((t[0], later)));
        // Over the Ms where B runs, here from 16: the first tiling is the one fastest there.
        assert_eq!(flat_tilings(&times, &ms[4..], t), Some((t[1], vec![TilingFrom { from_m: 128, tiling: t[2] }])));
    }

    #[test]
    fn without_a_crossing_the_thresholds_sit_past_the_grid() {
        let lin = BackendCaps::wgpu_builtin().linear;
        // Only one M: A wins there; B and C are assumed from just past it.
        let all = synthetic(&lin, 64, 64, &[1]);
        let e = choose(&ShapeTimes::new(&all, 64, 64), &lin).unwrap();
        assert_eq!(e.inflections, Inflections { m1: 2, m2: 2 });
        assert!(choose(&ShapeTimes::new(&[], 64, 64), &lin).is_none());
    }
}
