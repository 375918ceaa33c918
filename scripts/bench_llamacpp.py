#!/usr/bin/env python3
"""Batch-1 decode speed and TTFT of OpenAI-compatible servers, side by side.

For each server (NAME=URL), in rotated order and REPEAT times: one warm-up request, then
REQUESTS sequential streaming /v1/completions with a ~100-token prompt, greedy,
OUTPUT tokens forced (`ignore_eos` for Switchyard, `min_tokens` for llama.cpp, both sent to
both: each server ignores the field it does not know). Per request:
  TTFT = first streamed text after the request was sent;
  decode tok/s = (completion_tokens - 1) / (last chunk - first chunk).
Every request's prompt opens with its own serial number, so neither server answers from a
prefix cache (llama-cpp-python reuses the previous prompt's evaluated tokens; Switchyard
caches whole blocks): TTFT is a cold ~100-token prefill.
completion_tokens comes from the non-streamed twin request run once per server, which also
checks that OUTPUT tokens were produced. Then CONCURRENT streams at once against each
server: total output tok/s. Writes a JSON summary and prints a table.

Usage: bench_llamacpp.py --server switchyard=http://127.0.0.1:8000 --server llamacpp=http://...
           [--model NAME] [--requests 10] [--output 128] [--repeat 2] [--concurrent 32] [--out F]
"""

import argparse
import concurrent.futures as cf
import http.client
import json
import statistics
import time
import urllib.parse

PROMPT = (
    "The history of computing is a story of people building tools to think faster. "
    "Early machines filled rooms and used vacuum tubes; later, transistors and integrated "
    "circuits made computers small enough for a desk, then for a pocket. Programming "
    "languages grew from raw machine code to assembly, then to languages such as Fortran, "
    "C and Python. Today, large language models run on graphics processors and ordinary "
    "servers alike. Explain in a few paragraphs why memory bandwidth matters so much"
)


SERIAL = iter(range(1 << 62))


def body(model, output, stream):
    return {
        "model": model, "prompt": f"Note {next(SERIAL)}. {PROMPT}", "max_tokens": output, "temperature": 0.0,
        "stream": stream, "ignore_eos": True, "min_tokens": output,
    }


def post(url, payload, stream):
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    t0 = time.perf_counter()
    conn.request("POST", "/v1/completions", json.dumps(payload),
                 {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"{url}: HTTP {resp.status}: {resp.read()[:300]!r}")
    if not stream:
        out = json.loads(resp.read())
        conn.close()
        return t0, out
    first = last = None
    text = []
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        chunk = json.loads(data)
        piece = "".join(c.get("text") or "" for c in chunk.get("choices", []))
        if piece:
            now = time.perf_counter()
            first = first or now
            last = now
            text.append(piece)
    conn.close()
    return t0, (first, last, "".join(text))


def one_stream(url, model, output):
    t0, (first, last, text) = post(url, body(model, output, True), True)
    return first - t0, last - first, text


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", action="append", required=True, help="NAME=URL")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--requests", type=int, default=10)
    ap.add_argument("--output", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--concurrent", type=int, default=32)
    ap.add_argument("--out")
    a = ap.parse_args()
    servers = [s.split("=", 1) for s in a.server]
    res = {name: {"ttft_s": [], "decode_tok_s": []} for name, _ in servers}
    for name, url in servers:
        _, whole = post(url, body(a.model, a.output, False), False)
        usage = whole["usage"]
        res[name]["prompt_tokens"] = usage["prompt_tokens"]
        res[name]["completion_tokens"] = usage["completion_tokens"]
        if usage["completion_tokens"] != a.output:
            raise SystemExit(f"{name}: {usage['completion_tokens']} tokens, not {a.output}")
        res[name]["sample"] = whole["choices"][0]["text"][:160]
    for r in range(a.repeat):
        order = servers[r % len(servers):] + servers[:r % len(servers)]
        for name, url in order:
            for _ in range(a.requests):
                ttft, decode, _ = one_stream(url, a.model, a.output)
                res[name]["ttft_s"].append(ttft)
                res[name]["decode_tok_s"].append((a.output - 1) / decode)
    for name, url in servers:
        if a.concurrent <= 1:
            break
        t0 = time.perf_counter()
        with cf.ThreadPoolExecutor(a.concurrent) as pool:
            list(pool.map(lambda _: one_stream(url, a.model, a.output), range(a.concurrent)))
        res[name]["concurrent"] = a.concurrent
        res[name]["concurrent_tok_s"] = a.concurrent * a.output / (time.perf_counter() - t0)
    print(f"{'server':<12} {'prompt':>6} {'TTFT p50 ms':>12} {'decode tok/s (median)':>22} "
          f"{'tok/s at ' + str(a.concurrent):>14}")
    for name, _ in servers:
        r = res[name]
        r["ttft_p50_ms"] = statistics.median(r["ttft_s"]) * 1e3
        r["decode_tok_s_median"] = statistics.median(r["decode_tok_s"])
        print(f"{name:<12} {r['prompt_tokens']:>6} {r['ttft_p50_ms']:>12.1f} "
              f"{r['decode_tok_s_median']:>22.1f} {r.get('concurrent_tok_s', float('nan')):>14.1f}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
