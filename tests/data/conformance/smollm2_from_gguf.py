#!/usr/bin/env python3
"""A Hugging Face folder written by transformers from SmolLM2-135M-Instruct's own weights, as
a user makes one: the GGUF loaded by transformers, its state dict saved with
`safetensors.torch.save_file`, `config.save_pretrained` and `tokenizer.save_pretrained`
(transformers 5 style: `rope_parameters`, `chat_template.jinja`). Then transformers' greedy
ids from that folder for the two reference prompts and four held-out ones, which
`fdpp generate --model OUT --temperature 0 --json` must reproduce on every backend.

    python3 smollm2_from_gguf.py ~/.cache/fdpp SmolLM2-135M-Instruct.Q4_1.gguf OUT

Needs torch, transformers, accelerate and gguf. Writes OUT/hf_greedy.json.
"""
import json
import os
import sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

gguf_dir, name, out = sys.argv[1], sys.argv[2], sys.argv[3]
tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=name)
model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=name, dtype=torch.float32).eval()
os.makedirs(out, exist_ok=True)
sd = {k: v.contiguous() for k, v in model.state_dict().items()}
if model.config.tie_word_embeddings:
    sd.pop("lm_head.weight", None)
save_file(sd, out + "/model.safetensors", metadata={"format": "pt"})
if getattr(model.config, "quantization_config", None) is not None:
    del model.config.quantization_config
model.config.save_pretrained(out)
tok.save_pretrained(out)
# Reload what was written, as a user would, and generate greedily.
tok = AutoTokenizer.from_pretrained(out)
model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
res = {"transformers": transformers.__version__}
for chat in [False, True]:
    prompt = "What is the boiling point of water at sea level?" if chat else "The capital of France is"
    if chat:
        ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    else:
        ids = tok(prompt)["input_ids"]
    with torch.no_grad():
        g = model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False)
    res["chat" if chat else "raw"] = {"prompt_ids": ids, "ids": g[0, len(ids):].tolist()}
for p in ["Write a haiku about the sea.", "List three prime numbers greater than 50:", "def fibonacci(n):", "In 1969, the first humans"]:
    ids = tok(p)["input_ids"]
    with torch.no_grad():
        g = model.generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False)
    res[p] = {"prompt_ids": ids, "ids": g[0, len(ids):].tolist()}
json.dump(res, open(out + "/hf_greedy.json", "w"), indent=1)
print(json.dumps(res))
