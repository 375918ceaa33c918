#!/usr/bin/env python3
"""Reference greedy generation with Python onnxruntime: batch 1, dense KV cache.

For each prompt (a JSON list of token ids), feeds the whole prompt, then one token
at a time with the previous step's `present.*` as `past_key_values.*`, taking the
argmax (lowest id on ties) of the last position's logits. Stops after
--max-tokens tokens, or after an EOS when --stop-at-eos is given.

Prints one JSON object: {"outputs": [[ids of prompt 0], ...], "logprobs": [[...], ...]},
where "logprobs" holds each generated token's log-probability under the
log-softmax (float64) of its raw logits.

Usage: python3 scripts/onnx_reference.py --model models/tiny --max-tokens 32 \
           --prompts '[[1, 75, 104], [1, 87]]'
"""

import argparse
import json
import os

import numpy as np
import onnxruntime as ort


def generate(sess, cfg, prompt, max_tokens, stop_at_eos):
    layers, kvh = cfg["num_hidden_layers"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    eos = cfg["eos_token_id"]
    eos = set(eos if isinstance(eos, list) else [eos])
    past = {f"past_key_values.{i}.{k}": np.zeros((1, kvh, 0, hd), np.float32)
            for i in range(layers) for k in ("key", "value")}
    names = [o.name for o in sess.get_outputs()]
    tokens, out, lps, pos = list(prompt), [], [], 0
    new = list(prompt)
    while len(out) < max_tokens:
        feed = {
            "input_ids": np.array([new], np.int64),
            "attention_mask": np.ones((1, pos + len(new)), np.int64),
            "position_ids": np.arange(pos, pos + len(new), dtype=np.int64)[None],
            **past,
        }
        result = dict(zip(names, sess.run(names, feed)))
        pos += len(new)
        row = result["logits"][0, -1].astype(np.float64)
        nxt = int(np.argmax(row))
        top = row.max()
        lps.append(float(row[nxt] - top - np.log(np.exp(row - top).sum())))
        out.append(nxt)
        tokens.append(nxt)
        if stop_at_eos and nxt in eos:
            break
        past = {f"past_key_values.{i}.{k}": result[f"present.{i}.{k}"]
                for i in range(layers) for k in ("key", "value")}
        new = [nxt]
    return out, lps


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="model directory (model.onnx, config.json)")
    ap.add_argument("--prompts", required=True, help="JSON list of token-id lists")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--stop-at-eos", action="store_true")
    args = ap.parse_args()
    with open(os.path.join(args.model, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(os.path.join(args.model, "model.onnx"), opts,
                                providers=["CPUExecutionProvider"])
    prompts = json.loads(args.prompts)
    runs = [generate(sess, cfg, p, args.max_tokens, args.stop_at_eos) for p in prompts]
    print(json.dumps({"outputs": [r[0] for r in runs], "logprobs": [r[1] for r in runs]}))


if __name__ == "__main__":
    main()
