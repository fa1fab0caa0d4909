//! Choosing a layer's unified max phi and safe range (lo, hi) from the scores it was
//! observed to produce, and counting the rows a chosen range flags, with the kernels' own
//! condition.
//!
//! The split-KV kernels (`shaders/attention.wgsl` `attn_split`, `vendor_kernels/cuda/attention.cu`)
//! compute `d = s - phi` in f32 for every key of a (token, head) row and flag the row when
//! any `d < lo || d > hi`; the combine then recomputes it with the online softmax. So what
//! matters per row is its smallest and its largest score ([`RowRange`]), not only its max.

use serde::{Deserialize, Serialize};

use crate::lower::kernel::UnifiedMax;

/// The smallest and largest score of one (token, head) row, as f32 (the kernels' type).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowRange {
    pub min: f32,
    pub max: f32,
}

/// Whether the kernels flag this row under `u`: their test `d < lo || d > hi`, in f32, on
/// the row's extremes (s - phi is monotone in s, so if any key's d leaves the range, the
/// lowest's leaves it below or the highest's above).
pub fn flagged(row: RowRange, u: UnifiedMax) -> bool {
    row.min - u.phi < u.lo || row.max - u.phi > u.hi
}

/// The half-width H of the window (-H, H) around phi that f32 sums keep exact, for a KV cache
/// whose values are normal f16 numbers (1/65504 <= |v| <= 65504, the widest type a cache
/// holds): above, with every e^(s - phi) <= e^H, a row's sum over `max_keys` keys of
/// e^(s - phi) * v stays below f32::MAX; below, a row whose scores all sit at -H keeps
/// e^-H * v a normal f32, so its max never underflows to zero or loses precision.
pub fn half_width(max_keys: usize) -> f32 {
    let v = 65504f64.ln();
    let high = f32::MAX.ln() as f64 - (max_keys.max(1) as f64).ln() - v;
    let low = -(f32::MIN_POSITIVE.ln() as f64) - v;
    high.min(low).floor().max(1.0) as f32
}

/// Nats of room kept between the observed scores and each end of the window, for prompts
/// unlike the calibration's (longer contexts reach lower minima): e^8 ~ 3000x.
pub const MARGIN: f32 = 8.0;

/// The quantiles that bound "the bulk" of a layer's rows when its extreme rows do not fit.
pub const BULK_LOW: f64 = 0.001;
pub const BULK_HIGH: f64 = 0.999;

/// Which observed scores a layer's window was centred on.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "covers")]
pub enum Covers {
    /// Every observed row fits with `MARGIN` to spare on both sides.
    AllRows,
    /// The extreme rows do not fit with the margin, but the rows between the 0.1% quantile
    /// of the row minima and the 99.9% quantile of the row maxima do: those outside fall back.
    Bulk,
    /// Not even the bulk fits: the layer runs the synchronised softmax.
    Nothing,
}

/// What was chosen for one layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Choice {
    pub unified: UnifiedMax,
    pub synchronised: bool,
    pub covers: Covers,
    /// The observed score interval the window was placed on (the bulk's, or all rows').
    pub interval: (f32, f32),
}

/// q-quantile (0..=1) of `sorted` by nearest rank; `sorted` is not empty.
pub fn quantile(sorted: &[f32], q: f64) -> f32 {
    let i = (q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i]
}

/// Phi and the range (-H, H) of a layer whose rows are `rows`, for at most `max_keys` keys.
///
/// The window's width is fixed by f32 ([`half_width`]); what calibration moves is where it
/// sits. Phi is put at the centre of the observed score interval, [lowest row min, highest
/// row max], which leaves the most room on both sides, since the kernels flag a row when
/// any of its scores leaves the window, its lowest as well as its highest. If that interval
/// is too wide to keep `MARGIN` on each side, the window is centred on the bulk of the rows
/// (quantiles [`BULK_LOW`] of the row minima, [`BULK_HIGH`] of the row maxima); if even the
/// bulk does not fit, the layer is marked synchronised (FlashDecoding++'s OPT-6.7B case:
/// most rows would be recomputed, slower than the online softmax). With no rows (no
/// prompts), the default phi is kept.
pub fn choose(rows: &[RowRange], max_keys: usize) -> Choice {
    let h = half_width(max_keys);
    let window = |centre: f32| {
        // Phi rounded to a quarter: exact in binary, printed as is, within the margin.
        let phi = (centre * 4.0).round() / 4.0;
        UnifiedMax { phi, lo: -h, hi: h }
    };
    if rows.is_empty() {
        return Choice { unified: UnifiedMax::default(), synchronised: false, covers: Covers::AllRows, interval: (0.0, 0.0) };
    }
    let lowest = rows.iter().map(|r| r.min).fold(f32::INFINITY, f32::min);
    let highest = rows.iter().map(|r| r.max).fold(f32::NEG_INFINITY, f32::max);
    let fits = |lo: f32, hi: f32| hi - lo <= 2.0 * (h - MARGIN);
    if fits(lowest, highest) {
        let interval = (lowest, highest);
        return Choice { unified: window(0.5 * (lowest + highest)), synchronised: false, covers: Covers::AllRows, interval };
    }
    let mut mins: Vec<f32> = rows.iter().map(|r| r.min).collect();
    let mut maxs: Vec<f32> = rows.iter().map(|r| r.max).collect();
    mins.sort_by(f32::total_cmp);
    maxs.sort_by(f32::total_cmp);
    let interval = (quantile(&mins, BULK_LOW), quantile(&maxs, BULK_HIGH));
    if fits(interval.0, interval.1) {
        return Choice { unified: window(0.5 * (interval.0 + interval.1)), synchronised: false, covers: Covers::Bulk, interval };
    }
    Choice { unified: UnifiedMax::default(), synchronised: true, covers: Covers::Nothing, interval }
}

/// Rows seen and rows the kernels would flag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fallback {
    pub rows: usize,
    pub flagged: usize,
}

impl Fallback {
    pub fn count(rows: &[RowRange], u: UnifiedMax) -> Fallback {
        Fallback { rows: rows.len(), flagged: rows.iter().filter(|&&r| flagged(r, u)).count() }
    }

    /// Flagged rows / rows (0 with no rows).
    pub fn rate(&self) -> f64 {
        if self.rows == 0 { 0.0 } else { self.flagged as f64 / self.rows as f64 }
    }
}

impl std::ops::Add for Fallback {
    type Output = Fallback;
    fn add(self, o: Fallback) -> Fallback {
        Fallback { rows: self.rows + o.rows, flagged: self.flagged + o.flagged }
    }
}
