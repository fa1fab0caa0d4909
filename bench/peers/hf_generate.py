#!/usr/bin/env python3
"""Hugging Face transformers baseline for `fdpp bench --shape`: the same model shapes with
random f16 weights, eager attention, greedy `generate` of --gen tokens after a --prompt-token
prompt, batch 1. Run it on the lent GPU in the same call as fdpp so the ratio is side by side.
Prints one JSON line per shape."""
import argparse, json, time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

SHAPES = {
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True),
    "llama2-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=32, tie_word_embeddings=False),
}

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=SHAPES, action="append", required=True)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    for shape in a.shape:
        cfg = LlamaConfig(vocab_size=49152, rope_theta=10000.0, rms_norm_eps=1e-5,
                          max_position_embeddings=8192, attn_implementation="eager", **SHAPES[shape])
        with torch.device("cuda"):
            model = LlamaForCausalLM(cfg).to(torch.float16).eval()
        ids = (torch.arange(a.prompt, device="cuda") * 7919 + 13) % 49152
        ids = ids[None, :]
        def run(n):
            torch.cuda.synchronize()
            t = time.perf_counter()
            model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)
            torch.cuda.synchronize()
            return time.perf_counter() - t
        with torch.no_grad():
            run(4)  # warm-up
            prefill = sorted(run(1) for _ in range(a.repeats))[a.repeats // 2]
            total = sorted(run(a.gen) for _ in range(a.repeats))[a.repeats // 2]
        decode = (a.gen - 1) / max(total - prefill, 1e-9)
        print(json.dumps({"peer": "transformers eager", "shape": shape, "prompt": a.prompt, "gen": a.gen,
                          "prefill_tok_s": a.prompt / prefill, "decode_tok_s": decode,
                          "torch": torch.__version__, "gpu": torch.cuda.get_device_name()}), flush=True)
        del model
        torch.cuda.empty_cache()

if __name__ == "__main__":
    main()
