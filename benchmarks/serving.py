"""Serving throughput: one MiniLM-shaped text classifier served three ways, and streamed LM generation.

  1. `modelbuild serve` with dynamic batching (--max-batch-size 16 --batch-timeout 0.01),
  2. `modelbuild serve` unbatched (--max-batch-size 1),
  3. a plain FastAPI + uvicorn app that calls the model once per request (what one writes by hand),

each hit on loopback by `--requests` POSTs at concurrency 16 and 32 (httpx, asyncio); the table gives
req/s (of answered requests) and p50/p95/p99 latency, and how many failed. Then tokens/s of a tinylm-shaped GPT-2 streaming /v1/completions, against
`model.generate` in-process.

The classifier is a BERT with MiniLM-L6's shape (6 layers, 384 wide, 12 heads), saved with save_pretrained
(weights at random: throughput does not depend on them); `--model PATH` serves a real fine-tune instead,
e.g. `$(modelbuild path tweets:model)`. Texts are ~24 words.

Run:
    .venv/bin/python benchmarks/serving.py                      # 400 requests per row
    .venv/bin/python benchmarks/serving.py --requests 1000 --model "$(modelbuild path tweets:model)"
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORDS = ("the movie was good bad great awful and I think it is a very long story about people who love "
         "places time world day night music food city friends family").split()
READY = re.compile(r"on (http://127\.0\.0\.1:\d+)")


def save_classifier(folder: Path) -> Path:
    import torch
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                         cls_token="[CLS]", sep_token="[SEP]").save_pretrained(folder)
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=384, num_hidden_layers=6,
                                     num_attention_heads=12, intermediate_size=1536, max_position_embeddings=512,
                                     num_labels=2, id2label={0: "negative", 1: "positive"},
                                     label2id={"negative": 0, "positive": 1})
    transformers.BertForSequenceClassification(config).save_pretrained(folder)
    return folder


def save_tinylm(folder: Path) -> Path:
    """recipes/tinylm.yaml's model shape (2-layer GPT-2, 128 wide), with a byte-level tokenizer."""
    import torch
    import transformers
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([" ".join(WORDS)] * 50, vocab_size=300, special_tokens=["<|endoftext|>"])
    transformers.PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>",
                                         bos_token="<|endoftext|>").save_pretrained(folder)
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=bpe.get_vocab_size(), n_layer=2, n_embd=128, n_head=4,
                                     n_positions=128, eos_token_id=10**6, bos_token_id=0)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


def start(cmd: list[str], env=None) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, **(env or {})})
    for line in proc.stdout:
        found = READY.search(line)
        if found:
            return proc, found.group(1)
    raise SystemExit(f"{' '.join(cmd)} did not start (exit {proc.wait()})")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def serve(model: Path, *flags: str, logs: Path, threads: int) -> tuple[subprocess.Popen, str]:
    return start([sys.executable, "-m", "modelbuild", "serve", str(model), "--port", "0", "--log-dir", str(logs),
                  "--threads", str(threads), *flags], env={"PYTHONPATH": str(REPO)})


async def load(url: str, concurrency: int, requests: int) -> tuple[float, list[float], int]:
    """(seconds for all, latencies of the 200 answers, requests that failed)."""
    import httpx

    texts = [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(24)) for i in range(requests)]
    latencies, queue, failed = [], list(range(requests)), [0]
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=concurrency)) as client:
        async def worker():
            while queue:
                i = queue.pop()
                t = time.perf_counter()
                try:
                    r = await client.post(url + "/predict", json={"text": texts[i]})
                except httpx.TransportError:
                    failed[0] += 1
                    continue
                if r.status_code == 200:
                    latencies.append(time.perf_counter() - t)
                else:
                    failed[0] += 1
        for _ in range(8):  # warm up
            await client.post(url + "/predict", json={"text": texts[0]})
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, latencies, failed[0]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


# ---- the baseline: what one writes by hand -------------------------------------------------------------------
def fastapi_app(model: str, threads: int) -> None:
    """A FastAPI app calling the model once per request, run with uvicorn (as `--fastapi-app`)."""
    import socket

    import torch
    import transformers
    import uvicorn
    from fastapi import FastAPI

    torch.set_num_threads(threads)
    tok = transformers.AutoTokenizer.from_pretrained(model)
    net = transformers.AutoModelForSequenceClassification.from_pretrained(model).eval()
    app = FastAPI()

    @app.post("/predict")
    def predict(body: dict):
        with torch.no_grad():
            p = torch.softmax(net(**tok(body["text"], return_tensors="pt", truncation=True)).logits, -1)[0]
        return {"label": net.config.id2label[int(p.argmax())], "probabilities": p.tolist()}

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)  # listening before it says so: a client may connect at once
    print(f"serving on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


# ---- language model: streamed tokens/s ---------------------------------------------------------------------
def lm_rows(folder: Path, logs: Path, threads: int, tokens: int = 100, runs: int = 5) -> list[tuple[str, float]]:
    import httpx
    import torch
    import transformers

    torch.set_num_threads(threads)
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    net = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = tok("the movie was", return_tensors="pt")["input_ids"]
    net.generate(ids, max_new_tokens=8, do_sample=False)
    started = time.perf_counter()
    for _ in range(runs):
        out = net.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
    in_process = runs * (out.shape[1] - ids.shape[1]) / (time.perf_counter() - started)
    proc, url = serve(folder, logs=logs, threads=threads)
    try:
        body = {"prompt": "the movie was", "max_tokens": tokens, "stream": True}
        chunks, started = 0, None
        for run in range(runs + 1):
            with httpx.stream("POST", url + "/v1/completions", json=body, timeout=120) as r:
                if run == 1:
                    started = time.perf_counter()
                for line in r.iter_lines():
                    if run and line.startswith("data: {") and '"text": ""' not in line:
                        chunks += 1
        streamed = chunks / (time.perf_counter() - started)
    finally:
        stop(proc)
    return [("model.generate in-process", in_process), ("modelbuild serve, streamed /v1/completions", streamed)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a text classifier to serve (default: a MiniLM-shaped BERT at random)")
    ap.add_argument("--requests", type=int, default=400, help="requests per row")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--threads", type=int, default=1, help="torch threads of each server (default 1: on a "
                    "shared or small machine, more threads than free cores make every call many times slower)")
    ap.add_argument("--only", help="run the rows whose server name contains this text, e.g. FastAPI")
    ap.add_argument("--fastapi-app", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.fastapi_app:
        return fastapi_app(args.fastapi_app, args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    model = Path(args.model) if args.model else save_classifier(work / "classifier")
    ways = {
        "modelbuild serve, batched (16, 10 ms)": lambda: serve(model, "--max-batch-size", "16", "--batch-timeout",
                                                               "0.01", logs=work / "logs", threads=args.threads),
        "modelbuild serve, unbatched": lambda: serve(model, "--max-batch-size", "1", logs=work / "logs",
                                                     threads=args.threads),
        "FastAPI + uvicorn, per request": lambda: start([sys.executable, __file__, "--fastapi-app", str(model),
                                                         "--threads", str(args.threads)]),
    }
    print(f"{args.requests} requests per row, {args.threads} torch threads, {os.cpu_count()} cores\n")
    print("| server | c | req/s | p50 ms | p95 ms | p99 ms | failed |\n| --- | --- | --- | --- | --- | --- | --- |")
    for name, launch in ways.items():
        if args.only and args.only not in name:
            continue
        proc, url = launch()
        try:
            for c in args.concurrency:
                seconds, lat, failed = asyncio.run(load(url, c, args.requests))
                print(f"| {name} | {c} | {len(lat) / seconds:.1f} | {percentile(lat, 50) * 1e3:.0f} | "
                      f"{percentile(lat, 95) * 1e3:.0f} | {percentile(lat, 99) * 1e3:.0f} | {failed} |", flush=True)
        finally:
            stop(proc)
    print("\n| tinylm-shaped GPT-2, 100 tokens, greedy | tokens/s |\n| --- | --- |")
    for name, rate in lm_rows(save_tinylm(work / "tinylm"), work / "logs", args.threads):
        print(f"| {name} | {rate:.0f} |", flush=True)


if __name__ == "__main__":
    main()
