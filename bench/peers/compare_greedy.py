#!/usr/bin/env python3
"""Compares `fdpp generate --json` results (JSON lines with "backend" added) with
hf_greedy.py's for the same prompts: prompt ids and generated ids, token by token; a length
difference is a difference. Prints a table and exits 1 on any disagreement."""
import json, sys

hf = {(c["prompt"], bool(c.get("chat"))): c for c in map(json.loads, open(sys.argv[1])) if c}
bad = 0
print(f"{'backend':<24} {'chat':<5} {'prompt ids':<10} {'tokens':<14} prompt")
for line in open(sys.argv[2]):
    if not line.strip():
        continue
    r = json.loads(line)
    ref = hf[(r["prompt"], bool(r.get("chat")))]
    same_prompt = r["prompt_ids"] == ref["prompt_ids"]
    got, want = r["ids"], ref["ids"]
    agree = next((k for k, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    ok = same_prompt and got == want
    bad += not ok
    tokens = f"{len(want)} equal" if ok else f"first {agree} of {len(want)}"
    print(f"{r['backend']:<24} {str(bool(r.get('chat'))):<5} {'equal' if same_prompt else 'DIFFER':<10} {tokens:<14} {r['prompt'][:50]!r}")
print("all equal" if not bad else f"{bad} differ")
sys.exit(1 if bad else 0)
