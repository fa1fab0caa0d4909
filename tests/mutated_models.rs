//! A seeded mutation harness over the GGUF loader, a stable stand-in until coverage-guided
//! fuzzing lands. Bytes of the tiny model's header, metadata and tensor table are flipped,
//! overwritten with boundary values, or the file is cut. Each result is loaded and, where it
//! loads, its weights are checked against its graph and the graph is planned. Every step
//! must give `Ok` or an error, never a panic; a panicking case is kept as a reproducer.

mod common;

use fdpp_runtime::graph;
use fdpp_runtime::lower::caps::BackendCaps;
use fdpp_runtime::lower::{Lowering, LoweringOptions};
use fdpp_runtime::model::Model;

/// Cases per run: a few seconds on two cores. `FDPP_MUTATION_CASES` sets another count
/// (a long run: `FDPP_MUTATION_CASES=1000000 cargo test --release --test mutated_models`).
const CASES: u64 = 3000;

/// Values that sit on the edges of what a count, size or offset can hold.
const BOUNDARIES: [u64; 8] = [0, 1, 0x7f, 0xffff, 0xffff_ffff, 1 << 40, i64::MAX as u64, u64::MAX];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(clean: &[u8], parsed: usize, rng: &mut Rng) -> Vec<u8> {
    let mut m = clean.to_vec();
    match rng.below(3) {
        0 => {
            for _ in 0..1 + rng.below(8) {
                let at = rng.below(parsed);
                m[at] ^= 1 << rng.below(8);
            }
        }
        1 => {
            let at = rng.below(parsed.saturating_sub(8));
            let value = BOUNDARIES[rng.below(BOUNDARIES.len())].to_le_bytes();
            let width = [1, 2, 4, 8][rng.below(4)];
            m[at..at + width].copy_from_slice(&value[..width]);
        }
        _ => m.truncate(rng.below(clean.len())),
    }
    m
}

#[test]
fn mutated_gguf_files_load_or_fail_without_a_panic() {
    let dir = common::temp_dir("mutated");
    let clean_path = dir.join("clean.gguf");
    common::write_tiny(&clean_path, &common::Spec::default(), 7);
    let clean = std::fs::read(&clean_path).unwrap();
    // The loader parses everything before the tensor data; flips past it only change weights.
    let parsed = clean.len().min(1 << 16);
    let path = dir.join("case.gguf");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut loaded, mut refused) = (0, 0);
    let cases = std::env::var("FDPP_MUTATION_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(CASES);
    for case in 0..cases {
        let bytes = mutate(&clean, parsed, &mut rng);
        std::fs::write(&path, &bytes).unwrap();
        let outcome = std::panic::catch_unwind(|| match Model::load(&path) {
            Ok(model) => {
                let g = graph::llama::build(&model.config);
                g.check_weights(model.weights.as_ref())
                    .and_then(|_| Lowering::new(g, BackendCaps::cpu(), &LoweringOptions::default()))
                    .is_ok()
            }
            Err(_) => false,
        });
        match outcome {
            Ok(true) => loaded += 1,
            Ok(false) => refused += 1,
            Err(_) => {
                let keep = dir.join(format!("panic-{case}.gguf"));
                std::fs::write(&keep, &bytes).unwrap();
                panic!("case {case} panicked; the file is kept at {}", keep.display());
            }
        }
    }
    // Both outcomes occur, so the cases reach past the first check.
    eprintln!("{cases} mutated files: {loaded} loaded and planned, {refused} refused with an error");
    assert!(loaded > 0 && refused > 0, "{loaded} loaded, {refused} refused");
    let _ = std::fs::remove_dir_all(&dir);
}
