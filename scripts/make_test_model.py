#!/usr/bin/env python3
"""Generates a Llama-style decoder as an ONNX "decoder with past" graph.

Layout of the output directory (`models/<size>/`):
  model.onnx             the graph, Hugging Face / Optimum "decoder with past" convention:
                         inputs  input_ids [batch, seq] int64, attention_mask [batch, past+seq]
                                 int64, position_ids [batch, seq] int64,
                                 past_key_values.{i}.key|value [batch, kv_heads, past, head_dim] f32
                         outputs logits [batch, seq, vocab] f32,
                                 present.{i}.key|value [batch, kv_heads, past+seq, head_dim] f32
  model.safetensors      the same weights under Hugging Face Llama tensor names
  config.json            Hugging Face LlamaConfig fields
  tokenizer.json         byte-level tokenizer: 0 <pad>, 1 <s>, 2 </s>, byte b at id 3+b
  tokenizer_config.json  special tokens and a Jinja chat template

Architecture: RMSNorm, rotary embeddings computed from position_ids (rotate-half
convention), grouped-query attention, SwiGLU MLP, LM head tied to the embeddings.
The attention mask is by index in the concatenated (past ‖ new) key axis: query i
(concatenated index past+i) sees key j iff j <= past+i and attention_mask[b, j] == 1,
so a batch may pad shorter pasts (and right-pad new tokens) and mask the padding out.

With --attention gqa each layer's attention is one com.microsoft GroupQueryAttention (ONNX
Runtime's fused LLM attention: rotary embedding from cos/sin caches, causal attention over
the past, present = past + new). Its inputs and outputs keep the names and shapes above, but
it lays a batch out by sequence lengths, not by mask: it reads sequence b's past from rows
0..position_ids[b, 0] and writes its new rows right after them, so `present` rows past
position_ids[b, 0] + seq are unused (the graph states this as the metadata property
switchyard.kv_layout = "packed"; the decomposed graph's new rows sit at past..past+seq).
`attention_mask` only gives the key count. ONNX Runtime's CPU kernel takes several new
tokens on top of a past at batch 1 only.

Weights are random (seeded, so output is byte-identical across runs) but scaled so
greedy generation is not degenerate. Needs only `numpy` and `onnx`; with
`onnxruntime` installed it also checks the graph against a NumPy forward pass of the
safetensors weights.

Usage: python3 scripts/make_test_model.py --size tiny|bench|gpu1b [--out DIR] [--seed N]
           [--attention decomposed|gqa] [--weights-only]
"""

import argparse
import json
import os
import struct
import sys

import numpy as np

try:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
except ImportError:  # --weights-only needs numpy alone (GPU hosts without the onnx package)
    onnx = None

SIZES = {
    # Must match profiles/models/tiny-llama.toml.
    "tiny": dict(hidden=64, intermediate=172, heads=4, kv_heads=2, layers=2, max_pos=512),
    # ~101 M parameters: 16 x (attention 1.57 M + MLP 4.72 M) + embeddings.
    "bench": dict(hidden=768, intermediate=2048, heads=12, kv_heads=4, layers=16, max_pos=2048),
    # ~0.97 B parameters (TinyLlama-1.1B's shape, byte vocabulary): GPU decode
    # bandwidth where weights, not kernel launches, dominate. Use --weights-only.
    "gpu1b": dict(hidden=2048, intermediate=5632, heads=32, kv_heads=4, layers=22, max_pos=4096),
}
VOCAB = 259  # 3 specials + 256 bytes
PAD, BOS, EOS = 0, 1, 2
RMS_EPS = 1e-5
ROPE_THETA = 10000.0
OPSET = 17
CONTRIB = "com.microsoft"
# Metadata key naming where a graph writes each sequence's new K/V rows in `present`.
KV_LAYOUT = "switchyard.kv_layout"


def make_weights(cfg, seed):
    """HF-named float32 weights; Linear weights are [out, in] as in PyTorch."""
    rng = np.random.default_rng(seed)
    h, inter = cfg["hidden"], cfg["intermediate"]
    hd = h // cfg["heads"]
    kv = cfg["kv_heads"] * hd

    def normal(shape, std):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    # Embeddings of unit RMS give logits of a few units through the tied head;
    # large residual branches keep the model from echoing its input token.
    w = {"model.embed_tokens.weight": normal((VOCAB, h), 1.0)}
    for i in range(cfg["layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = (1.0 + normal((h,), 0.1)).astype(np.float32)
        w[p + "self_attn.q_proj.weight"] = normal((h, h), 3.0 / np.sqrt(h))
        w[p + "self_attn.k_proj.weight"] = normal((kv, h), 3.0 / np.sqrt(h))
        w[p + "self_attn.v_proj.weight"] = normal((kv, h), 2.0 / np.sqrt(h))
        w[p + "self_attn.o_proj.weight"] = normal((h, h), 4.0 / np.sqrt(h))
        w[p + "post_attention_layernorm.weight"] = (1.0 + normal((h,), 0.1)).astype(np.float32)
        w[p + "mlp.gate_proj.weight"] = normal((inter, h), 2.0 / np.sqrt(h))
        w[p + "mlp.up_proj.weight"] = normal((inter, h), 2.0 / np.sqrt(h))
        w[p + "mlp.down_proj.weight"] = normal((h, inter), 4.0 / np.sqrt(inter))
    w["model.norm.weight"] = (1.0 + normal((h,), 0.1)).astype(np.float32)
    return w


class Graph:
    """Accumulates ONNX nodes and initializers with unique names."""

    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 0

    def const(self, value, dtype=np.int64):
        name = f"const_{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def weight(self, name, array):
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def op(self, op_type, *inputs, out=None, **attrs):
        self.n += 1
        out = out or f"{op_type.lower()}_{self.n}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out


def rms_norm(g, x, weight, eps=RMS_EPS):
    var = g.op("ReduceMean", g.op("Mul", x, x), axes=[-1], keepdims=1)
    inv = g.op("Reciprocal", g.op("Sqrt", g.op("Add", var, g.const(eps, np.float32))))
    return g.op("Mul", g.op("Mul", x, inv), weight)


def heads_first(g, x, n_heads, hd):
    """[B, S, n*hd] -> [B, n, S, hd]."""
    x = g.op("Reshape", x, g.const([0, 0, n_heads, hd]))
    return g.op("Transpose", x, perm=[0, 2, 1, 3])


def rope(g, x, cos, sin, hd):
    half = hd // 2
    x1 = g.op("Slice", x, g.const([0]), g.const([half]), g.const([3]))
    x2 = g.op("Slice", x, g.const([half]), g.const([hd]), g.const([3]))
    rot = g.op("Concat", g.op("Neg", x2), x1, axis=3)
    return g.op("Add", g.op("Mul", x, cos), g.op("Mul", rot, sin))


def inv_freq(hd, theta):
    """RoPE's inverse frequencies, one per pair of head dimensions (float64)."""
    return 1.0 / (theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd))


def rotary_tables(g, hd, theta=ROPE_THETA):
    """cos/sin [B, 1, S, hd] from position_ids."""
    pos = g.op("Unsqueeze", g.op("Cast", "position_ids", to=TensorProto.FLOAT), g.const([-1]))
    freqs = g.op("Mul", pos, g.const(inv_freq(hd, theta), np.float32))
    emb = g.op("Concat", freqs, freqs, axis=-1)
    cos = g.op("Unsqueeze", g.op("Cos", emb), g.const([1]))
    sin = g.op("Unsqueeze", g.op("Sin", emb), g.const([1]))
    return cos, sin


def score_shapes(g, cfg):
    """Reshape targets [0, kvh, g, -1, T] and [0, kvh, -1, T] for the attention scores."""
    kvh = cfg["kv_heads"]
    t = g.op("Slice", g.op("Shape", "attention_mask"), g.const([1]), g.const([2]), g.const([0]))
    return {
        "split": g.op("Concat", g.const([0, kvh, cfg["heads"] // kvh, -1]), t, axis=0),
        "fold": g.op("Concat", g.const([0, kvh, -1]), t, axis=0),
    }


def attention_bias(g):
    """Additive bias [B, 1, 1, S, T]: 0 where query i may see key j, -1e9 elsewhere."""
    s = g.op("Gather", g.op("Shape", "input_ids"), g.const(1), axis=0)
    t = g.op("Gather", g.op("Shape", "attention_mask"), g.const(1), axis=0)
    past = g.op("Sub", t, s)
    keys = g.op("Range", g.const(0), t, g.const(1))
    queries = g.op("Unsqueeze", g.op("Range", past, t, g.const(1)), g.const([1]))
    causal = g.op("LessOrEqual", keys, queries)  # [S, T]
    mask = g.op("Cast", "attention_mask", to=TensorProto.BOOL)
    mask = g.op("Unsqueeze", mask, g.const([1, 2, 3]))  # [B, 1, 1, 1, T]
    allowed = g.op("And", causal, mask)
    return g.op("Where", allowed, g.const(0.0, np.float32), g.const(-1e9, np.float32))


def dense_linear(g, w, x, name):
    """x @ W.T with the float32 weight `name`.weight (the default linear layer)."""
    return g.op("MatMul", x, g.weight(name + ".T", np.ascontiguousarray(w[name + ".weight"].T)))


def attention_block(g, cfg, w, i, x, cos, sin, bias, shapes, linear=dense_linear):
    p = f"model.layers.{i}.self_attn."
    nh, kvh = cfg["heads"], cfg["kv_heads"]
    hd = cfg["hidden"] // nh
    lin = lambda a, name: linear(g, w, a, p + name)
    q = rope(g, heads_first(g, lin(x, "q_proj"), nh, hd), cos, sin, hd)
    k = rope(g, heads_first(g, lin(x, "k_proj"), kvh, hd), cos, sin, hd)
    v = heads_first(g, lin(x, "v_proj"), kvh, hd)
    pk = g.op("Concat", f"past_key_values.{i}.key", k, axis=2, out=f"present.{i}.key")
    pv = g.op("Concat", f"past_key_values.{i}.value", v, axis=2, out=f"present.{i}.value")
    # Grouped-query attention without repeating K/V: query head h uses KV head
    # h // g, so the g query heads of a KV head fold into one matrix of g*S rows
    # and every K/V element is read once per KV head, not once per query head.
    q4 = g.op("Reshape", q, g.const([0, kvh, -1, hd]))  # [B, kvh, g*S, hd]
    kt = g.op("Transpose", pk, perm=[0, 1, 3, 2])  # [B, kvh, hd, T]
    scores = g.op("Mul", g.op("MatMul", q4, kt), g.const(1.0 / np.sqrt(hd), np.float32))
    scores = g.op("Reshape", scores, shapes["split"])  # [B, kvh, g, S, T]
    probs = g.op("Softmax", g.op("Add", scores, bias), axis=-1)
    probs = g.op("Reshape", probs, shapes["fold"])  # [B, kvh, g*S, T]
    ctx = g.op("MatMul", probs, pv)  # [B, kvh, g*S, hd] = [B, nh, S, hd]
    ctx = g.op("Transpose", g.op("Reshape", ctx, g.const([0, nh, -1, hd])), perm=[0, 2, 1, 3])
    ctx = g.op("Reshape", ctx, g.const([0, 0, nh * hd]))
    return lin(ctx, "o_proj")


def mlp_block(g, w, i, x, linear=dense_linear, fused=None):
    p = f"model.layers.{i}.mlp."
    lin = lambda a, name: linear(g, w, a, p + name)
    if fused:
        inter = w[p + "gate_proj.weight"].shape[0]
        both = fused(g, w, x, [p + "gate_proj", p + "up_proj"])
        last = g.const([-1])
        gate = g.op("Slice", both, g.const([0]), g.const([inter]), last)
        up = g.op("Slice", both, g.const([inter]), g.const([2 * inter]), last)
    else:
        gate, up = lin(x, "gate_proj"), None
    act = g.op("Mul", gate, g.op("Sigmoid", gate))
    return lin(g.op("Mul", act, up or lin(x, "up_proj")), "down_proj")


def tied_head(g, h, embed):
    """Logits through the transposed embedding matrix (the default LM head)."""
    g.op("MatMul", h, g.op("Transpose", embed, perm=[1, 0]), out="logits")


class GqaInputs:
    """What every GroupQueryAttention node shares: the rotary caches (one row per position
    up to max_pos) and each sequence's key count minus one and the batch's key count."""

    def __init__(self, g, cfg):
        hd = cfg["hidden"] // cfg["heads"]
        freq = inv_freq(hd, cfg.get("rope_theta", ROPE_THETA))
        angles = np.arange(cfg["max_pos"], dtype=np.float64)[:, None] * freq[None, :]
        self.cos = g.weight("rotary.cos_cache", np.cos(angles).astype(np.float32))
        self.sin = g.weight("rotary.sin_cache", np.sin(angles).astype(np.float32))
        # seqlens_k = position_ids[:, 0] + seq - 1: right padding of the new tokens counts,
        # so its rows land after the real ones, where no real query looks.
        s = g.op("Gather", g.op("Shape", "input_ids"), g.const(1), axis=0)
        first = g.op("Gather", "position_ids", g.const(0), axis=1)
        last = g.op("Sub", g.op("Add", first, s), g.const(1))
        self.seqlens_k = g.op("Cast", last, to=TensorProto.INT32)
        keys = g.op("Gather", g.op("Shape", "attention_mask"), g.const(1), axis=0)
        self.total = g.op("Cast", keys, to=TensorProto.INT32)


def gqa_attention_block(g, cfg, w, i, x, shared, linear=dense_linear, fused=None):
    """One layer's attention as a GroupQueryAttention node (rotary inside); with `fused`,
    one projection yields q, k and v side by side, the packed form the node also takes."""
    p = f"model.layers.{i}.self_attn."
    nh, kvh = cfg["heads"], cfg["kv_heads"]
    hd = cfg["hidden"] // nh
    lin = lambda a, name: linear(g, w, a, p + name)
    if fused:
        q, k, v = fused(g, w, x, [p + "q_proj", p + "k_proj", p + "v_proj"]), "", ""
    else:
        q, k, v = lin(x, "q_proj"), lin(x, "k_proj"), lin(x, "v_proj")
    g.n += 1
    out = f"gqa_{g.n}"
    g.nodes.append(helper.make_node(
        "GroupQueryAttention",
        [q, k, v, f"past_key_values.{i}.key", f"past_key_values.{i}.value",
         shared.seqlens_k, shared.total, shared.cos, shared.sin],
        [out, f"present.{i}.key", f"present.{i}.value"], domain=CONTRIB,
        num_heads=nh, kv_num_heads=kvh, do_rotary=1, rotary_interleaved=0,
        scale=float(1.0 / np.sqrt(hd))))
    return lin(out, "o_proj")


def build_graph(cfg, w, linear=dense_linear, head=tied_head, attention="decomposed", fused=None):
    """The decoder graph; `linear(g, w, x, name)` emits each projection and
    `head(g, h, embed)` the `logits` output (a quantized model swaps both);
    `attention` is "decomposed" (plain ONNX ops) or "gqa"; `fused(g, w, x, names)`, if
    given, emits projections of one input as one (q/k/v with "gqa", gate/up), their
    outputs side by side: fewer, larger kernel calls."""
    g = Graph()
    hd = cfg["hidden"] // cfg["heads"]
    eps = cfg.get("rms_eps", RMS_EPS)
    embed = g.weight("model.embed_tokens.weight", w["model.embed_tokens.weight"])
    h = g.op("Gather", embed, "input_ids", axis=0)
    if attention == "gqa":
        shared = GqaInputs(g, cfg)
        attend = lambda i, x: gqa_attention_block(g, cfg, w, i, x, shared, linear, fused)
    else:
        cos, sin = rotary_tables(g, hd, cfg.get("rope_theta", ROPE_THETA))
        bias = attention_bias(g)
        shapes = score_shapes(g, cfg)
        attend = lambda i, x: attention_block(g, cfg, w, i, x, cos, sin, bias, shapes, linear)
    for i in range(cfg["layers"]):
        p = f"model.layers.{i}."
        ln = p + "input_layernorm.weight"
        x = rms_norm(g, h, g.weight(ln, w[ln]), eps)
        h = g.op("Add", h, attend(i, x))
        ln = p + "post_attention_layernorm.weight"
        h = g.op("Add", h, mlp_block(g, w, i, rms_norm(g, h, g.weight(ln, w[ln]), eps), linear, fused))
    h = rms_norm(g, h, g.weight("model.norm.weight", w["model.norm.weight"]), eps)
    head(g, h, embed)
    return g


def value_info(cfg):
    kvh, hd = cfg["kv_heads"], cfg["hidden"] // cfg["heads"]
    vocab = cfg.get("vocab", VOCAB)
    i64, f32 = TensorProto.INT64, TensorProto.FLOAT
    inputs = [
        helper.make_tensor_value_info("input_ids", i64, ["batch_size", "sequence_length"]),
        helper.make_tensor_value_info("attention_mask", i64, ["batch_size", "total_sequence_length"]),
        helper.make_tensor_value_info("position_ids", i64, ["batch_size", "sequence_length"]),
    ]
    outputs = [helper.make_tensor_value_info("logits", f32, ["batch_size", "sequence_length", vocab])]
    for i in range(cfg["layers"]):
        for kind in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(
                f"past_key_values.{i}.{kind}", f32, ["batch_size", kvh, "past_sequence_length", hd]))
            outputs.append(helper.make_tensor_value_info(
                f"present.{i}.{kind}", f32, ["batch_size", kvh, "total_sequence_length", hd]))
    return inputs, outputs


def build_model(cfg, w, linear=dense_linear, head=tied_head, name="switchyard_test_llama",
                producer="switchyard make_test_model.py", domains=(), attention="decomposed",
                fused=None):
    """The checked ONNX model; `domains` adds (domain, version) opsets for contrib ops."""
    g = build_graph(cfg, w, linear, head, attention, fused)
    inputs, outputs = value_info(cfg)
    graph = helper.make_graph(g.nodes, name, inputs, outputs, g.inits)
    domains = dict(domains)
    if attention == "gqa":
        domains.setdefault(CONTRIB, 1)
    opsets = [helper.make_opsetid("", OPSET)] + [helper.make_opsetid(d, v)
                                                 for d, v in domains.items()]
    model = helper.make_model(graph, opset_imports=opsets, producer_name=producer)
    if attention == "gqa":
        helper.set_model_props(model, {KV_LAYOUT: "packed"})
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_safetensors(path, tensors):
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name in sorted(tensors):
        n = tensors[name].nbytes
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name in sorted(tensors):
            f.write(np.ascontiguousarray(tensors[name], dtype="<f4").tobytes())


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable character map (the ByteLevel alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def tokenizer_json():
    specials = ["<pad>", "<s>", "</s>"]
    vocab = {tok: i for i, tok in enumerate(specials)}
    for b, ch in sorted(bytes_to_unicode().items()):
        vocab[ch] = 3 + b
    added = [dict(id=i, content=t, single_word=False, lstrip=False, rstrip=False,
                  normalized=False, special=True) for i, t in enumerate(specials)]
    bos = {"SpecialToken": {"id": "<s>", "type_id": 0}}
    seq = lambda s: {"Sequence": {"id": s, "type_id": 0}}
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                          "use_regex": False},
        "post_processor": {"type": "TemplateProcessing", "single": [bos, seq("A")],
                           "pair": [bos, seq("A"), bos, seq("B")],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [BOS], "tokens": ["<s>"]}}},
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                    "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": []},
    }


CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def config_json(cfg):
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": cfg["hidden"], "intermediate_size": cfg["intermediate"],
        "num_attention_heads": cfg["heads"], "num_key_value_heads": cfg["kv_heads"],
        "head_dim": cfg["hidden"] // cfg["heads"], "num_hidden_layers": cfg["layers"],
        "vocab_size": VOCAB, "max_position_embeddings": cfg["max_pos"],
        "rms_norm_eps": RMS_EPS, "rope_theta": ROPE_THETA, "tie_word_embeddings": True,
        "hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
        "bos_token_id": BOS, "eos_token_id": EOS, "pad_token_id": PAD,
        "torch_dtype": "float32",
    }


def numpy_forward(cfg, w, ids):
    """Reference logits for one sequence (no cache), from the HF-named weights."""
    nh, kvh, h = cfg["heads"], cfg["kv_heads"], cfg["hidden"]
    hd, s = h // nh, len(ids)
    eps, theta = cfg.get("rms_eps", RMS_EPS), cfg.get("rope_theta", ROPE_THETA)
    norm = lambda x, wt: x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * wt
    inv = 1.0 / (theta ** (np.arange(0, hd, 2) / hd))
    ang = np.arange(s)[:, None] * inv[None]
    cos, sin = np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))
    rot = lambda x: x * cos + np.concatenate([-x[..., hd // 2:], x[..., :hd // 2]], -1) * sin
    x = w["model.embed_tokens.weight"][ids].astype(np.float64)
    causal = np.tril(np.ones((s, s), bool))
    for i in range(cfg["layers"]):
        p = f"model.layers.{i}."
        a = norm(x, w[p + "input_layernorm.weight"])
        q = (a @ w[p + "self_attn.q_proj.weight"].T).reshape(s, nh, hd).transpose(1, 0, 2)
        k = (a @ w[p + "self_attn.k_proj.weight"].T).reshape(s, kvh, hd).transpose(1, 0, 2)
        v = (a @ w[p + "self_attn.v_proj.weight"].T).reshape(s, kvh, hd).transpose(1, 0, 2)
        q, k = rot(q), rot(k)
        k, v = np.repeat(k, nh // kvh, 0), np.repeat(v, nh // kvh, 0)
        sc = np.where(causal, q @ k.transpose(0, 2, 1) / np.sqrt(hd), -np.inf)
        pr = np.exp(sc - sc.max(-1, keepdims=True))
        pr /= pr.sum(-1, keepdims=True)
        x = x + (pr @ v).transpose(1, 0, 2).reshape(s, h) @ w[p + "self_attn.o_proj.weight"].T
        m = norm(x, w[p + "post_attention_layernorm.weight"])
        gate = m @ w[p + "mlp.gate_proj.weight"].T
        up = m @ w[p + "mlp.up_proj.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ w[p + "mlp.down_proj.weight"].T
    return norm(x, w["model.norm.weight"]) @ w["model.embed_tokens.weight"].T


def onnx_logits(ort, path, cfg, ids):
    """Logits [S, vocab] of the graph at `path` for one prompt: its first half on an empty
    past, the rest on the first half's `present` (so the past path is checked too)."""
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    hd = cfg["hidden"] // cfg["heads"]
    names = [o.name for o in sess.get_outputs()]
    past = {f"past_key_values.{i}.{kind}": np.zeros((1, cfg["kv_heads"], 0, hd), np.float32)
            for i in range(cfg["layers"]) for kind in ("key", "value")}
    split, logits = len(ids) // 2, []
    for lo, hi in ((0, split), (split, len(ids))):
        feed = {"input_ids": ids[None, lo:hi], "attention_mask": np.ones((1, hi), np.int64),
                "position_ids": np.arange(lo, hi, dtype=np.int64)[None], **past}
        out = dict(zip(names, sess.run(names, feed)))
        logits.append(out["logits"][0])
        past = {f"past_key_values.{i}.{kind}": out[f"present.{i}.{kind}"]
                for i in range(cfg["layers"]) for kind in ("key", "value")}
    return np.concatenate(logits)


def self_check(path, cfg, w):
    """Compares onnxruntime on the graph with the NumPy forward; skipped without onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime not installed: skipping the self-check", file=sys.stderr)
        return
    ids = np.array([BOS] + [3 + b for b in b"The quick brown fox"], dtype=np.int64)
    got = onnx_logits(ort, path, cfg, ids)
    want = numpy_forward(cfg, w, ids)
    err = np.abs(got - want).max() / max(1.0, np.abs(want).max())
    if err > 1e-3:
        sys.exit(f"self-check failed: ONNX and NumPy logits differ by {err:.2e} (relative)")
    print(f"self-check: ONNX logits match NumPy forward (max rel diff {err:.1e})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="tiny")
    ap.add_argument("--out", help="output directory (default models/<size>)")
    ap.add_argument("--seed", type=int, default=20240607)
    ap.add_argument("--attention", choices=["decomposed", "gqa"], default="decomposed",
                    help="plain ONNX attention, or com.microsoft GroupQueryAttention")
    ap.add_argument("--weights-only", action="store_true",
                    help="write config, tokenizer and model.safetensors, no model.onnx (numpy only)")
    args = ap.parse_args()
    if onnx is None and not args.weights_only:
        sys.exit("the onnx package is missing: pip install onnx, or pass --weights-only")
    cfg = SIZES[args.size]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = args.out or os.path.join(root, "models", args.size)
    os.makedirs(out, exist_ok=True)
    w = make_weights(cfg, args.seed)
    model_path = os.path.join(out, "model.onnx")
    if not args.weights_only:
        onnx.save(build_model(cfg, w, attention=args.attention), model_path)
    write_safetensors(os.path.join(out, "model.safetensors"), w)
    docs = {
        "config.json": config_json(cfg),
        "tokenizer.json": tokenizer_json(),
        "tokenizer_config.json": {
            "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>",
            "add_bos_token": True, "add_eos_token": False, "model_max_length": cfg["max_pos"],
            "tokenizer_class": "PreTrainedTokenizerFast", "chat_template": CHAT_TEMPLATE,
        },
    }
    for name, doc in docs.items():
        with open(os.path.join(out, name), "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1, ensure_ascii=False, sort_keys=name != "tokenizer.json")
            f.write("\n")
    params = sum(a.size for a in w.values())
    print(f"wrote {out}: {params} parameters ({params / 1e6:.3f} M)")
    if not args.weights_only:
        self_check(model_path, cfg, w)


if __name__ == "__main__":
    main()
