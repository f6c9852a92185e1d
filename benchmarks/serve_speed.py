"""Serving speed: `tunelab serve` under 1, 4 and 16 concurrent clients against plain generate,
and the llama.cpp backend on the same model as an f32 GGUF at 1 and 16 clients.

    python benchmarks/serve_speed.py                 # SmolLM2-135M-Instruct, 64 new tokens
    python benchmarks/serve_speed.py --json          # one JSON object last
    python benchmarks/serve_speed.py --backends llamacpp   # only the GGUF server

What runs, one after the other (nothing else should run on the machine meanwhile):

1. **plain generate, one request at a time**, in a child process: SmolLM2-135M-Instruct
   from the model store, ``model.generate`` greedy on each prompt alone (no padding), up to
   64 new tokens, stopping at end of turn. Also the **prefill time** of one call: the
   median of ``model.generate(max_new_tokens=1)`` over the prompts (prompt forward pass
   plus one token), the floor for a server's time to first token.
2. **the server**: ``tunelab serve smollm2-135m-instruct`` in a child process on a free
   loopback port (a throwaway SQLite request log), queried with the official ``openai``
   client over HTTP, streaming, greedy (temperature 0), ``max_tokens`` 64, at 1, 4 and 16
   concurrent clients; each client sends its requests back to back (a closed loop).
3. **the server on a GGUF** (needs the ``llamacpp`` extra): the same store model written as
   an f32 GGUF by tunelab's exporter (``tunelab.models.gguf_write``, in a child process),
   served by ``tunelab serve FILE.gguf`` (llama.cpp) and queried the same way at 1 and 16
   clients. f32 keeps the weights identical to the transformers server's, so the two
   differ only in the engine.

Prompts: GSM8K questions from ``../shared/data/gsm8k`` whose chat-rendered prompt is
90-110 tokens (SmolLM2's template, its default system turn included), the same list for
every phase, in the same order.

Figures per phase: aggregate generated tokens/s (completion tokens from the server's
``usage`` over the phase's wall time), time to first token (the first chunk with text) and
latency, p50 and p99, failed requests. Each server's peak RSS is its ``VmHWM`` at the end
(the GGUF's memory-mapped weights count once read). Ratios: tokens/s at 16 clients over
plain generate (target >= 6x) and over the server at 1 client; time to first token at 1
client over the prefill time (target <= 1.5x). The targets are the transformers
server's; the llama.cpp rows are reported beside it, with no target of their own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _requires import require

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "gsm8k" / "gsm_8k_train.json"
MODEL = "smollm2-135m-instruct"
TARGET_SPEEDUP = 6.0  # tokens/s at 16 clients over plain generate
TARGET_TTFT = 1.5  # time to first token at 1 client over one generate call's prefill
KEY = "bench-key"


def _prompts(path: Path, n: int) -> list[str]:
    from tunelab.data.template import render_prompt_ids
    from tunelab.models.loading import load_tokenizer
    from tunelab.models.resolve import resolve_model

    tok = load_tokenizer(resolve_model(MODEL))
    rows = json.loads(path.read_text(encoding="utf-8"))
    out = []
    for r in rows:
        text = (r["instruction"] + ("\n" + r["input"] if r.get("input") else "")).strip()
        if 90 <= len(render_prompt_ids(tok, [{"role": "user", "content": text}])) <= 110:
            out.append(text)
            if len(out) == n:
                break
    return out


def _plain_generate(prompts: list[str], max_new: int) -> dict:
    """Child process: plain model.generate, one request at a time."""
    import torch

    from tunelab.data.template import end_of_turn_ids, render_prompt_ids
    from tunelab.models.loading import load_causal_lm, load_tokenizer
    from tunelab.models.resolve import resolve_model

    path = resolve_model(MODEL)
    tok, model = load_tokenizer(path), load_causal_lm(path, False, "float32").eval()
    stop = sorted(end_of_turn_ids(tok) | {tok.eos_token_id})
    ids = [torch.tensor([render_prompt_ids(tok, [{"role": "user", "content": p}])]) for p in prompts]

    def gen(x: torch.Tensor, n: int) -> int:
        y = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=n,
                           do_sample=False, eos_token_id=stop, pad_token_id=stop[0])
        new = y[0, x.shape[1]:].tolist()
        return next((i for i, t in enumerate(new) if t in stop), len(new))

    with torch.inference_mode():
        gen(ids[0], 4)  # warm-up
        prefill = []
        for x in ids[:8]:
            t = time.perf_counter()
            gen(x, 1)
            prefill.append(time.perf_counter() - t)
        tokens, latencies = 0, []
        start = time.perf_counter()
        for x in ids:
            t = time.perf_counter()
            tokens += gen(x, max_new)
            latencies.append(time.perf_counter() - t)
        wall = time.perf_counter() - start
    return {"requests": len(ids), "tokens": tokens, "seconds": round(wall, 2),
            "tokens_per_second": round(tokens / wall, 2),
            "latency_p50_s": round(statistics.median(latencies), 3),
            "prefill_s": round(statistics.median(prefill), 4),
            "torch_threads": torch.get_num_threads()}


def _write_gguf(out: str) -> dict:
    """Child process: the store model as an f32 GGUF, with its template and stop ids."""
    from tunelab.data.template import end_of_turn_ids
    from tunelab.models.gguf_write import write_gguf
    from tunelab.models.loading import load_causal_lm, load_tokenizer
    from tunelab.models.resolve import resolve_model

    path = resolve_model(MODEL)
    tok, model = load_tokenizer(path), load_causal_lm(path, False, "float32").eval()
    t = time.perf_counter()
    write_gguf(model, tok, Path(out), ftype="f32", chat_template=tok.chat_template, name=MODEL,
               stop_ids=set(end_of_turn_ids(tok)) | {tok.eos_token_id})
    return {"path": out, "seconds": round(time.perf_counter() - t, 1),
            "mb": round(Path(out).stat().st_size / 2**20, 1)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def _phase(client, model: str, prompts: list[str], clients: int, per_client: int,
           max_new: int) -> dict:
    ttft: list[float] = []
    latency: list[float] = []
    tokens, failures = [0], [0]
    lock = threading.Lock()

    def worker(w: int) -> None:
        for k in range(per_client):
            prompt = prompts[(w * per_client + k) % len(prompts)]
            t = time.perf_counter()
            first = None
            try:
                stream = client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": prompt}],
                    max_tokens=max_new, temperature=0, stream=True,
                    stream_options={"include_usage": True})
                used = 0
                for chunk in stream:
                    if first is None and chunk.choices and chunk.choices[0].delta.content:
                        first = time.perf_counter() - t
                    if chunk.usage is not None:
                        used = chunk.usage.completion_tokens
                done = time.perf_counter() - t
            except Exception as e:  # counted, and the phase goes on
                print(f"request failed: {type(e).__name__}: {e}", file=sys.stderr)
                with lock:
                    failures[0] += 1
                continue
            with lock:
                tokens[0] += used
                latency.append(done)
                if first is not None:
                    ttft.append(first)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(clients)]
    start = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - start
    return {"clients": clients, "requests": clients * per_client, "failed": failures[0],
            "tokens": tokens[0], "seconds": round(wall, 2),
            "tokens_per_second": round(tokens[0] / wall, 2),
            "ttft_p50_s": round(_pct(ttft, 0.5), 3), "ttft_p99_s": round(_pct(ttft, 0.99), 3),
            "latency_p50_s": round(_pct(latency, 0.5), 3),
            "latency_p99_s": round(_pct(latency, 0.99), 3)}


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def _serve(ref: str, prompts: list[str], levels: list[int], per_client: dict[int, int],
           max_new: int) -> dict:
    """``tunelab serve REF`` in a child process, queried at each level of clients."""
    from openai import OpenAI

    port = _free_port()
    tmp = tempfile.mkdtemp(prefix="tunelab-bench-")
    env = {**os.environ, "TUNELAB_API_KEYS": KEY, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "tunelab", "serve", ref, "--port", str(port),
           "--db", f"sqlite:///{tmp}/requests.db"]
    log = open(Path(tmp) / "server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        import urllib.request

        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the server exited with {proc.returncode}; see {log.name}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"the server was not ready in 300 s; see {log.name}")
            time.sleep(0.5)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0,
                        timeout=600)
        _phase(client, ref, prompts, 2, 1, 8)  # warm-up
        phases = {str(c): _phase(client, ref, prompts, c, per_client[c], max_new) for c in levels}
        rss = _peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    return {"phases": phases, "peak_rss_mb": rss, "exit_code": proc.returncode}


def _row(backend: str, c: int, f: dict, rss: float) -> str:
    return (f"{backend:12s} {c:2d} clients: {f['tokens_per_second']:7.2f} tokens/s, TTFT p50/p99 "
            f"{f['ttft_p50_s']}/{f['ttft_p99_s']} s, latency p50/p99 {f['latency_p50_s']}/"
            f"{f['latency_p99_s']} s, peak RSS {rss} MB, {f['failed']} failed of {f['requests']}")


def _transformers(a: argparse.Namespace, prompts: list[str]) -> dict | None:
    """Plain generate and the transformers server, with the ratios and their targets."""
    spec = Path(tempfile.mkdtemp(prefix="tunelab-bench-")) / "plain.json"
    spec.write_text(json.dumps({"prompts": prompts[:a.plain_requests], "max_new": a.max_new_tokens}))
    print(f"plain generate: {a.plain_requests} requests, one at a time ...", file=sys.stderr)
    child = subprocess.run([sys.executable, __file__, "--child-plain", str(spec)],
                           capture_output=True, text=True, check=False)
    if child.returncode != 0:
        print(child.stderr, file=sys.stderr)
        return None
    plain = json.loads(child.stdout.strip().splitlines()[-1])
    print("server (transformers): 1, 4 and 16 concurrent clients ...", file=sys.stderr)
    served = _serve(MODEL, prompts, [1, 4, 16], {1: 8, 4: 4, 16: a.rounds}, a.max_new_tokens)
    ph = served["phases"]
    speedup = ph["16"]["tokens_per_second"] / plain["tokens_per_second"]
    over_one = ph["16"]["tokens_per_second"] / ph["1"]["tokens_per_second"]
    ttft_ratio = ph["1"]["ttft_p50_s"] / plain["prefill_s"]
    failed = sum(x["failed"] for x in ph.values())
    return {"plain_generate": plain, "server": served,
            "ratios": {"tokens_per_second_16_over_plain": round(speedup, 2),
                       "tokens_per_second_16_over_server_1": round(over_one, 2),
                       "ttft_1_over_prefill": round(ttft_ratio, 2)},
            "targets": {"speedup": TARGET_SPEEDUP, "ttft_ratio": TARGET_TTFT},
            "meets_targets": speedup >= TARGET_SPEEDUP and ttft_ratio <= TARGET_TTFT and failed == 0}


def _llamacpp(a: argparse.Namespace, prompts: list[str]) -> dict | None:
    """The same model as an f32 GGUF, served by llama.cpp at 1 and 16 clients."""
    gguf = a.gguf
    made = None
    if gguf is None:
        gguf = str(Path(tempfile.mkdtemp(prefix="tunelab-bench-")) / f"{MODEL}-f32.gguf")
        print(f"writing {MODEL} as an f32 GGUF ...", file=sys.stderr)
        child = subprocess.run([sys.executable, __file__, "--child-gguf", gguf],
                               capture_output=True, text=True, check=False)
        if child.returncode != 0:
            print(child.stderr, file=sys.stderr)
            return None
        made = json.loads(child.stdout.strip().splitlines()[-1])
    print("server (llama.cpp): 1 and 16 concurrent clients ...", file=sys.stderr)
    try:
        served = _serve(gguf, prompts, [1, 16], {1: 8, 16: a.rounds}, a.max_new_tokens)
    finally:
        if made is not None:  # 515 MB of f32 weights: not left behind in /tmp
            shutil.rmtree(Path(gguf).parent, ignore_errors=True)
    return {"gguf": made or {"path": gguf}, "server": served}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="GSM8K JSON (instruction/input/output)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--plain-requests", type=int, default=8, help="plain generate requests")
    p.add_argument("--rounds", type=int, default=3, help="requests per client at 16 clients")
    p.add_argument("--backends", nargs="+", choices=["transformers", "llamacpp"],
                   default=["transformers", "llamacpp"], help="the servers to measure")
    p.add_argument("--gguf", help="serve this GGUF instead of writing the store model as one")
    p.add_argument("--json", action="store_true")
    p.add_argument("--child-plain", help=argparse.SUPPRESS)  # internal: the plain-generate child
    p.add_argument("--child-gguf", help=argparse.SUPPRESS)  # internal: the GGUF-writing child
    a = p.parse_args(argv)
    require(["torch", "tunelab", "openai"], 'pip install -e ".[dev]"  (or: make install-dev)')
    if "llamacpp" in a.backends:
        require(["llama_cpp"], "pip install -e \".[llamacpp]\"  (builds llama.cpp: a C++ compiler and cmake)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if a.child_plain:
        spec = json.loads(Path(a.child_plain).read_text())
        print(json.dumps(_plain_generate(spec["prompts"], spec["max_new"])))
        return 0
    if a.child_gguf:
        print(json.dumps(_write_gguf(a.child_gguf)))
        return 0
    if not Path(a.data).is_file():
        print(f"{a.data} is absent: pass --data with a GSM8K-style JSON file", file=sys.stderr)
        return 2
    prompts = _prompts(Path(a.data), 64)
    hf = _transformers(a, prompts) if "transformers" in a.backends else None
    cpp = _llamacpp(a, prompts) if "llamacpp" in a.backends else None
    if (hf is None and "transformers" in a.backends) or (cpp is None and "llamacpp" in a.backends):
        return 1
    result = {"model": MODEL, "max_new_tokens": a.max_new_tokens, "prompts": len(prompts),
              "machine": platform.machine(), "cpus": os.cpu_count(),
              "load_average": [round(x, 2) for x in os.getloadavg()], **(hf or {}),
              "llamacpp": cpp}
    cpp_failed = sum(f["failed"] for f in cpp["server"]["phases"].values()) if cpp else 0
    ok = (hf is None or hf["meets_targets"]) and cpp_failed == 0
    if a.json:
        print(json.dumps(result))
        return 0 if ok else 1
    if hf is not None:
        plain, served, r = hf["plain_generate"], hf["server"], hf["ratios"]
        print(f"plain generate: {plain['tokens_per_second']} tokens/s, prefill "
              f"{plain['prefill_s'] * 1000:.0f} ms, latency p50 {plain['latency_p50_s']} s")
        for c, f in served["phases"].items():
            print(_row("transformers", int(c), f, served["peak_rss_mb"]))
        print(f"16 clients vs plain generate: {r['tokens_per_second_16_over_plain']:.2f}x (target "
              f"{TARGET_SPEEDUP}x); vs 1 client {r['tokens_per_second_16_over_server_1']:.2f}x; "
              f"TTFT at 1 client / prefill: {r['ttft_1_over_prefill']:.2f} (target <= {TARGET_TTFT})")
    if cpp is not None:
        for c, f in cpp["server"]["phases"].items():
            print(_row("llama.cpp", int(c), f, cpp["server"]["peak_rss_mb"]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
