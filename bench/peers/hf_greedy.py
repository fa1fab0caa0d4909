#!/usr/bin/env python3
"""Greedy tokens of a GGUF model by Hugging Face transformers (float32, CPU), as the
independent reference for `fdpp generate --temperature 0` on any backend. Reads prompts as
JSON lines ({"prompt": ..., "chat": bool}) on stdin; prints one JSON line per prompt with
the prompt's ids and the --max-tokens generated ids (fewer where EOS ends it).
Needs transformers, torch and the `gguf` package (pip install gguf)."""
import argparse, json, os, sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="the GGUF file")
    ap.add_argument("--max-tokens", type=int, default=24)
    a = ap.parse_args()
    folder, name = os.path.split(os.path.abspath(a.model))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=torch.float32).eval()
    for line in sys.stdin:
        if not line.strip():
            continue
        case = json.loads(line)
        if case.get("chat"):
            ids = tok.apply_chat_template([{"role": "user", "content": case["prompt"]}], add_generation_prompt=True, return_tensors="pt")
            if not torch.is_tensor(ids):  # transformers 5 returns the encoding
                ids = ids["input_ids"]
        else:
            ids = tok(case["prompt"], return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=a.max_tokens, do_sample=False, attention_mask=torch.ones_like(ids))
        print(json.dumps({**case, "prompt_ids": ids[0].tolist(), "ids": out[0, ids.shape[1]:].tolist(),
                          "transformers": __import__("transformers").__version__}), flush=True)


if __name__ == "__main__":
    main()
