"""Serving load benchmark over loopback: the local stand-in server (REST, gRPC) vs the direct SavedModel call.

    .venv/bin/python benchmarks/serving_benchmark.py [--backbone efficientnet_b7] [--image-size 224]
        [--requests 40] [--max-seconds 60] [--clients 4]

Exports a classifier (random weights; speed does not depend on them), pushes it into TF Serving's
layout, starts ``placedemarche serve --local`` in its own process, and measures in the same run:
- the direct ``serving_default`` call in this process (batch 1 and 8): latency and throughput;
- REST and gRPC at batch 1 and 8, with 1 client and with ``--clients`` concurrent clients:
  p50 / p95 / p99 latency and throughput (pictures/s). Each setting is bounded by ``--requests``
  per client and ``--max-seconds``.
Targets: at batch 1 with one client the server adds <= 10 % latency over the direct call; with
concurrent batch-1 clients (the server batches them) throughput reaches >= 90 % of the direct
batch-8 throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentiles(latencies):
    import numpy as np

    ms = np.array(latencies) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1)}


def measure(call, clients: int, requests: int, max_seconds: float, batch: int):
    """Runs ``call()`` from ``clients`` threads; returns latency percentiles and pictures/s."""
    latencies, errors, lock = [], [], threading.Lock()
    deadline = time.monotonic() + max_seconds

    def worker():
        for _ in range(requests):
            if time.monotonic() > deadline:
                return
            t0 = time.perf_counter()
            try:
                call()
            except Exception as e:
                with lock:
                    errors.append(repr(e))
                continue
            with lock:
                latencies.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    return {**percentiles(latencies), "requests": len(latencies), "errors": len(errors),
            "pictures_per_s": round(len(latencies) * batch / elapsed, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "flipkart"))
    parser.add_argument("--backbone", default="efficientnet_b7")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--requests", type=int, default=40, help="per client and setting")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="per setting")
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()

    import tensorflow as tf

    from benchmarks.explain_benchmark import export_model, pictures
    from placedemarche.components.serving_pusher import push as push_lib
    from placedemarche.serving import client as client_lib

    tmp = tempfile.mkdtemp(prefix="serving-benchmark-")
    model_dir = export_model(args.backbone, args.image_size, os.path.join(tmp, "model"))
    push_lib.push(model_dir, os.path.join(tmp, "serving"), "product_category")
    images = pictures(args.data, 8)
    rest_port, grpc_port = free_port(), free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "placedemarche.pipeline.cli", "-q", "serve", "--local", "--model-base-path",
         os.path.join(tmp, "serving", "product_category"), "--rest-port", str(rest_port), "--grpc-port", str(grpc_port)],
        cwd=str(REPO), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = {"backbone": args.backbone, "image_size": args.image_size, "cpus": os.cpu_count(),
               "clients": args.clients}
    try:
        signature = tf.saved_model.load(model_dir).signatures["serving_default"]
        direct = {b: (lambda b=b: signature(images=tf.constant(images[:b]))["probabilities"].numpy()) for b in (1, 8)}
        for b in (1, 8):
            direct[b]()  # warm up
        clients = {}
        for protocol, port in (("rest", rest_port), ("grpc", grpc_port)):
            config = client_lib.ClientConfig("127.0.0.1", port, timeout_s=120, retries=0)
            clients[protocol] = client_lib.make_client(protocol, config)
        clients["rest"].wait_until_ready(timeout_s=600)
        for c in clients.values():
            c.predict(images[:8])  # warm up
        rows = []
        for batch in (1, 8):
            rows.append(("direct", batch, 1, measure(direct[batch], 1, args.requests, args.max_seconds, batch)))
            for protocol in ("rest", "grpc"):
                for n in (1, args.clients):
                    # One client object per thread, as separate callers would have.
                    per_thread = threading.local()

                    def call(protocol=protocol, batch=batch):
                        if not hasattr(per_thread, "client"):
                            config = client_lib.ClientConfig("127.0.0.1", rest_port if protocol == "rest" else grpc_port,
                                                             timeout_s=120, retries=0)
                            per_thread.client = client_lib.make_client(protocol, config)
                        per_thread.client.predict(images[:batch])

                    rows.append((protocol, batch, n, measure(call, n, args.requests, args.max_seconds, batch)))
                    print(f"{protocol} batch {batch} x {n} clients: {rows[-1][3]}", flush=True)
        results["rows"] = [{"path": p, "batch": b, "clients": n, **m} for p, b, n, m in rows]
        table = {(p, b, n): m for p, b, n, m in rows}
        d1 = table[("direct", 1, 1)]["p50_ms"]
        d8 = table[("direct", 8, 1)]["pictures_per_s"]
        for protocol in ("rest", "grpc"):
            results[f"{protocol}_batch1_overhead"] = round(table[(protocol, 1, 1)]["p50_ms"] / d1 - 1, 3)
            results[f"{protocol}_concurrent_batch1_vs_direct_batch8"] = round(
                table[(protocol, 1, args.clients)]["pictures_per_s"] / d8, 3)
        print(f"{'path':<7} {'batch':>5} {'clients':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'pic/s':>7} {'errors':>6}")
        for p, b, n, m in rows:
            print(f"{p:<7} {b:>5} {n:>7} {m['p50_ms']:>8} {m['p95_ms']:>8} {m['p99_ms']:>8} {m['pictures_per_s']:>7} {m['errors']:>6}")
        print(json.dumps({k: v for k, v in results.items() if k != "rows"}, indent=2))
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
