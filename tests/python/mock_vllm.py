#!/usr/bin/env python3
"""A small stand-in for a vLLM OpenAI-compatible server, for fleet-tier tests.

HTTP (stdlib ThreadingHTTPServer):
  GET  /health                  200 (hangs with --fail-mode hang)
  GET  /v1/models               the served model
  POST /v1/completions          prompt as a string or a list of token ids;
                                max_tokens, stream (SSE, --tokens-per-chunk tokens a
                                chunk), stream_options.include_usage,
                                return_token_ids; deterministic fake tokens
  POST /tokenize                {"prompt": ...} -> {"tokens": [...], "count": n}
  POST /reset_prefix_cache      drops the cache (publishes AllBlocksCleared)
  GET  /metrics                 vLLM gauge names, labelled model_name (and engine)
  POST /mock/fail_mode          {"mode": "none|500|429|hang"}: changes --fail-mode live

Strings are tokenized as their UTF-8 bytes (one token per byte).

KV events (--kv-events-port): a ZMQ PUB socket sending vLLM's multipart
messages [topic, seq (8-byte big-endian), msgpack KVEventBatch]. Each served
prompt's full blocks not yet cached are published as one BlockStored; blocks
pushed out of the --kv-blocks LRU capacity are published as BlockRemoved.
Hashes chain like vLLM's builtin hashing: hash(parent, tokens) as ints
(--hash-format bytes: sha256 digests, as vLLM's sha256 hashing publishes).
--kv-layout map encodes as vLLM's current kv_events.py (events are tagged
maps, omit_defaults); --kv-layout array as its first releases (array_like:
the batch [ts, events, dp_rank] and events ["BlockStored", fields...]).

On start it prints one JSON line: {"port": P, "kv_events_port": Q}.
"""

import argparse
import collections
import hashlib
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import msgpack
import zmq

MASK64 = (1 << 64) - 1
# vLLM seeds every chain with NONE_HASH; a fixed one keeps runs comparable.
NONE_HASH = 0x5EED


class KvCache:
    """An LRU prefix cache that publishes vLLM KV events."""

    def __init__(self, args):
        self.block_size = args.block_size
        self.capacity = args.kv_blocks
        self.hash_format = args.hash_format
        self.layout = args.kv_layout
        self.blocks = collections.OrderedDict()  # engine hash -> None, LRU first
        self.lock = threading.Lock()
        self.seq = 0
        self.pub = None
        self.kv_port = None
        if args.kv_events_port is not None:
            self.pub = zmq.Context.instance().socket(zmq.PUB)
            self.pub.setsockopt(zmq.LINGER, 0)
            if args.kv_events_port == 0:
                self.kv_port = self.pub.bind_to_random_port("tcp://127.0.0.1")
            else:
                self.pub.bind(f"tcp://127.0.0.1:{args.kv_events_port}")
                self.kv_port = args.kv_events_port

    def block_hash(self, parent, tokens):
        if self.hash_format == "bytes":
            p = b"" if parent is None else parent
            return hashlib.sha256(p + b"|" + ",".join(map(str, tokens)).encode()).digest()
        seed = NONE_HASH if parent is None else parent
        return hash((seed, tuple(tokens))) & MASK64

    def stored_event(self, hashes, parent, tokens):
        if self.layout == "array":
            return ["BlockStored", hashes, parent, tokens, self.block_size, None, "GPU", None]
        # Fields without defaults are always present; defaulted ones
        # (extra_keys, group_idx, kv_cache_spec_*) are omitted when unset.
        return {
            "type": "BlockStored",
            "block_hashes": hashes,
            "parent_block_hash": parent,
            "token_ids": tokens,
            "block_size": self.block_size,
            "lora_id": None,
            "medium": "GPU",
            "lora_name": None,
        }

    def removed_event(self, hashes):
        if self.layout == "array":
            return ["BlockRemoved", hashes, "GPU"]
        return {"type": "BlockRemoved", "block_hashes": hashes, "medium": "GPU"}

    def cleared_event(self):
        return ["AllBlocksCleared"] if self.layout == "array" else {"type": "AllBlocksCleared"}

    def publish(self, events):
        if self.pub is None or not events:
            return
        if self.layout == "array":
            batch = [time.time(), events, 0]
        else:
            batch = {"ts": time.time(), "events": events, "data_parallel_rank": 0}
        payload = msgpack.packb(batch, use_bin_type=True)
        self.pub.send_multipart([b"", self.seq.to_bytes(8, "big"), payload])
        self.seq += 1

    def serve_prompt(self, tokens):
        """Caches the prompt's full blocks; returns how many were already cached."""
        bs = self.block_size
        with self.lock:
            parent = None
            hit = 0
            new_hashes, new_tokens, new_parent = [], [], None
            for k in range(len(tokens) // bs):
                chunk = tokens[k * bs:(k + 1) * bs]
                h = self.block_hash(parent, chunk)
                if h in self.blocks:
                    self.blocks.move_to_end(h)
                    if not new_hashes:
                        hit += 1
                else:
                    if not new_hashes:
                        new_parent = parent
                    new_hashes.append(h)
                    new_tokens.extend(chunk)
                    self.blocks[h] = None
                parent = h
            events = []
            if new_hashes:
                events.append(self.stored_event(new_hashes, new_parent, new_tokens))
            evicted = []
            while len(self.blocks) > self.capacity:
                h, _ = self.blocks.popitem(last=False)
                evicted.append(h)
            if evicted:
                events.append(self.removed_event(evicted))
            self.publish(events)
            return hit

    def reset(self):
        with self.lock:
            self.blocks.clear()
            self.publish([self.cleared_event()])

    def usage(self):
        with self.lock:
            return len(self.blocks) / max(self.capacity, 1)


class State:
    def __init__(self, args):
        self.args = args
        self.fail_mode = args.fail_mode
        self.kv = KvCache(args)
        self.running = 0
        self.waiting = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.lock = threading.Lock()
        self.slots = threading.Semaphore(args.max_num_seqs)
        self.next_id = 0
        self.stop = threading.Event()

    def new_id(self):
        with self.lock:
            self.next_id += 1
            return f"cmpl-mock-{self.next_id}"


def fake_token(prompt, i):
    """Deterministic output token i for a prompt."""
    return (sum(prompt) * 31 + len(prompt) * 7 + i * 7919) % 32000


def tokenize(prompt):
    if isinstance(prompt, str):
        return list(prompt.encode("utf-8"))
    if isinstance(prompt, list) and all(isinstance(t, int) and t >= 0 for t in prompt):
        return prompt
    raise ValueError("prompt must be a string or a list of token ids")


def error_body(message, kind, code):
    return {"object": "error", "message": message, "type": kind, "param": None, "code": code}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state = None  # set in main

    def log_message(self, fmt, *a):
        if self.state.args.verbose:
            super().log_message(fmt, *a)

    def send_json(self, code, obj, headers=()):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def read_json(self):
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) or b"{}")

    def hang(self):
        # Holds the connection open until the server stops.
        self.state.stop.wait()
        self.close_connection = True

    def do_GET(self):
        st = self.state
        if self.path == "/health":
            if st.fail_mode == "hang":
                return self.hang()
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/v1/models":
            self.send_json(200, {"object": "list", "data": [{
                "id": st.args.model, "object": "model", "created": 0,
                "owned_by": "vllm", "root": st.args.model, "parent": None,
                "max_model_len": st.args.max_model_len}]})
        elif self.path == "/metrics":
            self.send_metrics()
        else:
            self.send_json(404, error_body("Not Found", "NotFoundError", 404))

    def send_metrics(self):
        st = self.state
        labels = f'model_name="{st.args.model}",engine="0"'
        with st.lock:
            gauges = [
                ("vllm:num_requests_running", "Number of requests in model execution batches.", st.running),
                ("vllm:num_requests_waiting", "Number of requests waiting to be processed.", st.waiting),
            ]
            counters = [
                ("vllm:prompt_tokens_total", "Number of prefill tokens processed.", st.prompt_tokens),
                ("vllm:generation_tokens_total", "Number of generation tokens processed.", st.generation_tokens),
            ]
        usage = st.kv.usage()
        gauges += [
            ("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", usage),
            ("vllm:gpu_cache_usage_perc", "GPU KV-cache usage. 1 means 100 percent usage.", usage),
        ]
        lines = []
        for name, help_, v in gauges:
            lines += [f"# HELP {name} {help_}", f"# TYPE {name} gauge", f"{name}{{{labels}}} {float(v)}"]
        for name, help_, v in counters:
            lines += [f"# HELP {name} {help_}", f"# TYPE {name} counter", f"{name}{{{labels}}} {float(v)}"]
        body = ("\n".join(lines) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        st = self.state
        try:
            req = self.read_json()
        except (ValueError, UnicodeDecodeError):
            return self.send_json(400, error_body("invalid JSON body", "BadRequestError", 400))
        if self.path == "/v1/completions":
            return self.completions(req)
        if self.path == "/tokenize":
            try:
                toks = tokenize(req.get("prompt", ""))
            except ValueError as e:
                return self.send_json(400, error_body(str(e), "BadRequestError", 400))
            return self.send_json(200, {"tokens": toks, "count": len(toks),
                                        "max_model_len": st.args.max_model_len})
        if self.path == "/reset_prefix_cache":
            st.kv.reset()
            return self.send_json(200, {})
        if self.path == "/mock/fail_mode":
            mode = req.get("mode")
            if mode not in ("none", "500", "429", "hang"):
                return self.send_json(400, error_body("unknown mode", "BadRequestError", 400))
            st.fail_mode = mode
            return self.send_json(200, {"mode": mode})
        self.send_json(404, error_body("Not Found", "NotFoundError", 404))

    def completions(self, req):
        st = self.state
        mode = st.fail_mode
        if mode == "500":
            return self.send_json(500, error_body("mock failure", "InternalServerError", 500))
        if mode == "429":
            return self.send_json(429, error_body("too many requests", "RateLimitError", 429),
                                  headers=[("Retry-After", "1")])
        if mode == "hang":
            return self.hang()
        try:
            prompt = tokenize(req.get("prompt"))
            max_tokens = int(req.get("max_tokens") or 16)
            if max_tokens < 1:
                raise ValueError("max_tokens must be at least 1")
        except (ValueError, TypeError) as e:
            return self.send_json(400, error_body(str(e), "BadRequestError", 400))
        if len(prompt) + max_tokens > st.args.max_model_len:
            return self.send_json(400, error_body(
                f"This model's maximum context length is {st.args.max_model_len} tokens.",
                "BadRequestError", 400))
        model = req.get("model") or st.args.model
        stream = bool(req.get("stream"))
        usage_wanted = bool((req.get("stream_options") or {}).get("include_usage"))
        with_ids = bool(req.get("return_token_ids"))
        rid, created = st.new_id(), int(time.time())

        with st.lock:
            st.waiting += 1
        st.slots.acquire()
        with st.lock:
            st.waiting -= 1
            st.running += 1
            st.prompt_tokens += len(prompt)
        try:
            cached_blocks = st.kv.serve_prompt(prompt)
            usage = {"prompt_tokens": len(prompt), "completion_tokens": max_tokens,
                     "total_tokens": len(prompt) + max_tokens,
                     "prompt_tokens_details": {"cached_tokens": cached_blocks * st.args.block_size}}
            delay = st.args.token_delay_ms / 1000.0
            tokens = [fake_token(prompt, i) for i in range(max_tokens)]
            if not stream:
                time.sleep(delay * max_tokens)
                choice = {"index": 0, "text": "".join(f" t{t}" for t in tokens), "logprobs": None,
                          "finish_reason": "length", "stop_reason": None}
                if with_ids:
                    choice["prompt_token_ids"] = prompt
                    choice["token_ids"] = tokens
                with st.lock:
                    st.generation_tokens += max_tokens
                return self.send_json(200, {"id": rid, "object": "text_completion", "created": created,
                                            "model": model, "choices": [choice], "usage": usage})
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            per = max(1, st.args.tokens_per_chunk)
            # --one-write: the chunks go out together, as from a server
            # flushing a backlog, so a proxy reads several in one go.
            held = []
            for first in range(0, len(tokens), per):
                group = tokens[first:first + per]
                time.sleep(delay * len(group))
                last = first + len(group) == len(tokens)
                choice = {"index": 0, "text": "".join(f" t{t}" for t in group), "logprobs": None,
                          "finish_reason": "length" if last else None, "stop_reason": None}
                if with_ids:
                    choice["token_ids"] = group
                    if first == 0:
                        choice["prompt_token_ids"] = prompt
                chunk = {"id": rid, "object": "text_completion", "created": created,
                         "model": model, "choices": [choice]}
                event = f"data: {json.dumps(chunk)}\n\n".encode()
                if st.args.one_write:
                    held.append(event)
                else:
                    self.wfile.write(event)
                    self.wfile.flush()
                with st.lock:
                    st.generation_tokens += len(group)
            if held:
                self.wfile.write(b"".join(held))
            if usage_wanted:
                chunk = {"id": rid, "object": "text_completion", "created": created,
                         "model": model, "choices": [], "usage": usage}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away
        finally:
            with st.lock:
                st.running -= 1
            st.slots.release()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=8000, help="HTTP port on 127.0.0.1 (0: any free port)")
    p.add_argument("--model", default="mock-model")
    p.add_argument("--token-delay-ms", type=float, default=0.0, help="delay before each output token")
    p.add_argument("--tokens-per-chunk", type=int, default=1, help="output tokens per streamed chunk")
    p.add_argument("--one-write", action="store_true",
                   help="write a stream's chunks in one write (a proxy reads them together)")
    p.add_argument("--fail-mode", choices=["none", "500", "429", "hang"], default="none")
    p.add_argument("--kv-events-port", type=int, default=None,
                   help="ZMQ PUB port for KV events on 127.0.0.1 (0: any free port; unset: no events)")
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--kv-blocks", type=int, default=1024, help="cache capacity in blocks (LRU eviction)")
    p.add_argument("--kv-layout", choices=["map", "array"], default="map")
    p.add_argument("--hash-format", choices=["int", "bytes"], default="int")
    p.add_argument("--max-num-seqs", type=int, default=256, help="running requests; the rest wait")
    p.add_argument("--max-model-len", type=int, default=8192)
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()

    state = State(args)
    Handler.state = state
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(json.dumps({"port": server.server_address[1], "kv_events_port": state.kv.kv_port}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        state.stop.set()
        server.server_close()


if __name__ == "__main__":
    sys.exit(main())
