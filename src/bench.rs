//! `fdpp bench`: prefill and decode throughput of one backend on one model.

use std::path::PathBuf;
use std::time::Instant;

use fdpp_runtime::Result;
use fdpp_runtime::engine::sampler;

use crate::DeviceArgs;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Model file or folder; the default model when omitted.
    #[arg(long)]
    model: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
    /// Prompt length of the prefill measurement.
    #[arg(long, default_value_t = 128)]
    prompt_tokens: usize,
    /// Tokens decoded after the prompt.
    #[arg(long, default_value_t = 64)]
    gen_tokens: usize,
    /// Measured repetitions (the median is reported).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn run(args: BenchArgs) -> Result<()> {
    let opts = args.device.engine_options(Some(args.prompt_tokens + args.gen_tokens + 1), 1);
    let mut engine = crate::load_engine(args.model.as_deref(), &opts)?;
    let vocab = engine.config.vocab_size as u64;
    // Token ids spread over the vocabulary; the content does not change the work.
    let prompt: Vec<u32> = (0..args.prompt_tokens as u64).map(|i| ((i * 7919 + 13) % vocab) as u32).collect();
    engine.forward(&prompt[..prompt.len().min(8)], 0)?; // warm-up: buffers, caches, thread pool
    let (mut prefill, mut decode) = (Vec::new(), Vec::new());
    for _ in 0..args.repeats.max(1) {
        let t = Instant::now();
        let logits = engine.forward(&prompt, 0)?;
        prefill.push(prompt.len() as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        let mut next = sampler::argmax(&logits);
        for pos in prompt.len()..prompt.len() + args.gen_tokens {
            next = engine.forward_greedy(next, pos)?;
        }
        decode.push(args.gen_tokens as f64 / t.elapsed().as_secs_f64());
    }
    let (p, d) = (median(prefill), median(decode));
    let backend = engine.backend_description();
    if args.json {
        let v = serde_json::json!({
            "backend": backend,
            "prompt_tokens": args.prompt_tokens,
            "gen_tokens": args.gen_tokens,
            "repeats": args.repeats,
            "prefill_tok_s": p,
            "decode_tok_s": d,
        });
        println!("{v}");
    } else {
        println!("backend: {backend}");
        println!("prefill {:>5} tokens: {p:>10.1} tok/s", args.prompt_tokens);
        println!("decode  {:>5} tokens: {d:>10.1} tok/s (median of {})", args.gen_tokens, args.repeats.max(1));
    }
    Ok(())
}
