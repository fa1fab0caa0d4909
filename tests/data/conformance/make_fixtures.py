#!/usr/bin/env python3
"""Conformance fixtures written by Hugging Face transformers itself.

Tiny random-weight models of each architecture and RoPE variant fdpp runs, saved with
`save_pretrained` (transformers 5 style; a transformers 4 style copy of each gets its
config.json rewritten the way transformers 4 wrote it), in float32 and bfloat16, one of
them sharded, each with transformers' own logits for a prompt and its greedy ids. The same
weights are also exported as GGUF (float32 fixtures, with the `gguf` package), so GGUF and
HF imports are checked against one reference.

Run where torch, transformers and gguf are installed (e.g. the lent GPU machine; computing
is on the CPU in float32):

    python3 make_fixtures.py OUT_DIR

Writes OUT_DIR/<name>/{config.json, model*.safetensors, tokenizer.json, ...,
reference.json} and OUT_DIR/<name>.gguf, and OUT_DIR/versions.json.
"""
import json
import os
import shutil
import sys

import numpy as np
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

# A byte-level BPE vocabulary: the 256 byte characters, a few merges, and two control tokens.
SPECIALS = ["<|bos|>", "<|eos|>"]
MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n")]
PROMPT = "The theme is in the tent, then the rest."
DECODE_STEPS = 8


def byte_chars():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs))]


def tokenizer():
    vocab = {c: i for i, c in enumerate(byte_chars())}
    for a, b in MERGES:
        vocab[a + b] = len(vocab)
    for s in SPECIALS:
        vocab[s] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=MERGES))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIALS[0], eos_token=SPECIALS[1])
    return fast, vocab


# name: (architecture, config overrides, tied embeddings)
BASE = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=256, rms_norm_eps=1e-5)
FIXTURES = {
    "llama-tied": ("llama", dict(rope_parameters={"rope_type": "default", "rope_theta": 10000.0}), True),
    "llama-untied": ("llama", dict(rope_parameters={"rope_type": "default", "rope_theta": 500000.0}), False),
    "llama3-rope": ("llama", dict(rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
                                                   "high_freq_factor": 4.0, "original_max_position_embeddings": 64}), False),
    "qwen2": ("qwen2", dict(rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, use_sliding_window=False), True),
    "llama-head-dim": ("llama", dict(head_dim=16, rope_parameters={"rope_type": "default", "rope_theta": 10000.0}), False),
}
# Variants written in transformers 5 style only, float32.
EXTRA = {
    "llama-linear-rope": ("llama", dict(rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0}), True),
    "llama-yarn-rope": ("llama", dict(rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                                                       "original_max_position_embeddings": 64}), True),
    "llama-attention-bias": ("llama", dict(attention_bias=True, mlp_bias=True,
                                           rope_parameters={"rope_type": "default", "rope_theta": 10000.0}), False),
}


def build(arch, overrides, tied, vocab_size, seed):
    cls_cfg, cls_model = (LlamaConfig, LlamaForCausalLM) if arch == "llama" else (Qwen2Config, Qwen2ForCausalLM)
    cfg = cls_cfg(vocab_size=vocab_size, tie_word_embeddings=tied, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
                  **BASE, **overrides)
    torch.manual_seed(seed)
    model = cls_model(cfg).eval()
    # Weights large enough that every part of the network moves the logits.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (1.5 / p.shape[-1] ** 0.5))
    return model


def reference(model, ids):
    """float32 logits of the prompt's last position and of each greedy step, and the ids."""
    with torch.no_grad():
        x = torch.tensor([ids])
        out = model.generate(x, max_new_tokens=DECODE_STEPS, do_sample=False, output_logits=True, return_dict_in_generate=True,
                             pad_token_id=model.config.eos_token_id, eos_token_id=None)
        prefill = model(x).logits[0, -1]
    return {
        "prompt_ids": ids,
        "prefill_logits": prefill.tolist(),
        "greedy_ids": out.sequences[0, len(ids):].tolist(),
        "step_logits": [l[0].tolist() for l in out.logits],
    }


def v4_config(path, transformers_version="4.46.0"):
    """Rewrites a transformers 5 config.json the way transformers 4 wrote it."""
    c = json.load(open(path))
    rope = c.pop("rope_parameters", {}) or {}
    c["rope_theta"] = rope.pop("rope_theta", 10000.0)
    rope_type = rope.pop("rope_type", "default")
    c["rope_scaling"] = None if rope_type == "default" else {"rope_type": rope_type, **rope}
    if "dtype" in c:
        c["torch_dtype"] = c.pop("dtype")
    c["transformers_version"] = transformers_version
    json.dump(c, open(path, "w"), indent=2)


def permute(w, n_head):
    """llama.cpp's convert-time Q/K row permutation (HF split halves -> interleaved pairs)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def export_gguf(model, vocab, path):
    import gguf
    cfg = model.config
    arch = cfg.model_type
    rope = cfg.rope_parameters
    if rope["rope_type"] not in ("default", "linear", "llama3"):
        return False  # llama.cpp's YaRN is its own implementation, not transformers'
    w = gguf.GGUFWriter(path, arch)
    w.add_name("fdpp conformance fixture")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_dimension_count(head_dim)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(rope["rope_theta"])
    tensors = {}
    if rope["rope_type"] == "llama3":
        # As convert_hf_to_gguf.py: per-frequency divisors in `rope_freqs.weight`.
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
        scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](cfg, "cpu")
        base = 1.0 / (rope["rope_theta"] ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
        tensors["rope_freqs.weight"] = (base / scaled).numpy().astype(np.float32)
    elif rope["rope_type"] == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rope["factor"])
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in SPECIALS else 1 for t in tokens])
    w.add_token_merges([f"{a} {b}" for a, b in MERGES])
    w.add_bos_token_id(vocab[SPECIALS[0]])
    w.add_eos_token_id(vocab[SPECIALS[1]])
    w.add_add_bos_token(False)
    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
             "post_attention_layernorm": "ffn_norm"}
    for name, p in model.state_dict().items():
        a = p.float().numpy()
        if name == "model.embed_tokens.weight":
            tensors["token_embd.weight"] = a
        elif name == "model.norm.weight":
            tensors["output_norm.weight"] = a
        elif name == "lm_head.weight":
            if not cfg.tie_word_embeddings:
                tensors["output.weight"] = a
        else:
            rest = name.removeprefix("model.layers.")
            layer, leaf = rest.split(".", 1)
            module, kind = leaf.rsplit(".", 1)
            if arch == "llama" and module == "self_attn.q_proj":
                a = permute(a, cfg.num_attention_heads)
            elif arch == "llama" and module == "self_attn.k_proj":
                a = permute(a, cfg.num_key_value_heads)
            tensors[f"blk.{layer}.{names[module]}.{kind}"] = a
    for name, a in tensors.items():
        w.add_tensor(name, np.ascontiguousarray(a, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return True


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    tok, vocab = tokenizer()
    ids = tok(PROMPT)["input_ids"]
    assert len(ids) > 8, ids
    made = []
    for seed, (name, (arch, overrides, tied)) in enumerate(list(FIXTURES.items()) + list(EXTRA.items())):
        model = build(arch, overrides, tied, len(vocab), seed + 1)
        styles = ["v5", "v4"] if name in FIXTURES else ["v5"]
        dtypes = ["f32", "bf16"] if name in FIXTURES else ["f32"]
        if export_gguf(model, vocab, os.path.join(out, f"{name}.gguf")):
            made.append(f"{name}.gguf")
        for dtype in dtypes:
            for style in styles:
                d = os.path.join(out, f"{name}-{style}-{dtype}")
                shutil.rmtree(d, ignore_errors=True)
                # One fixture in shards with an index, as large checkpoints come.
                shard = "20KB" if (name, style, dtype) == ("llama-untied", "v5", "f32") else "1GB"
                dt = torch.bfloat16 if dtype == "bf16" else torch.float32
                model.to(dt).save_pretrained(d, max_shard_size=shard)
                model.float()
                tok.save_pretrained(d)
                if style == "v4":
                    v4_config(os.path.join(d, "config.json"))
                # The reference is transformers' own reading of what it wrote, in float32
                # (bf16 weights widened exactly; rotary frequencies computed afresh).
                loaded = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
                json.dump(reference(loaded, ids), open(os.path.join(d, "reference.json"), "w"))
                made.append(os.path.basename(d))
    versions = {"transformers": transformers.__version__, "torch": torch.__version__, "prompt": PROMPT, "fixtures": made}
    json.dump(versions, open(os.path.join(out, "versions.json"), "w"), indent=2)
    print(json.dumps(versions, indent=2))


if __name__ == "__main__":
    main()
