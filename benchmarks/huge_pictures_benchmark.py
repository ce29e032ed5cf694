"""Sellers' original photos sent to the served model: latency and the server's memory per picture size.

    .venv/bin/python benchmarks/huge_pictures_benchmark.py [--backbone efficientnet_b7] [--requests 3]

Exports an image classifier (random weights; speed does not depend on them) with the pipeline's
bounded decoding, pushes it, starts ``placedemarche serve --local`` in its own process and sends it,
over REST and gRPC, generated JPEGs of 1, 24, 94 and 225 megapixels (a smooth picture, as large as sellers'
studio originals), ``--requests`` times each, one at a time. For each size it prints the median
latency and the server's peak resident memory above its idle level (sampled every 5 ms from
``/proc``), then sends a PNG over the pixel cap and checks the server answers 400 and keeps
serving. Targets: at 94 MP within 1.5 x the 1 MP latency and under 300 MB above idle.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SIZES = {1: (1155, 866), 24: (5657, 4243), 94: (8484, 11042), 225: (15000, 15000)}  # megapixels: width, height


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class PeakSampler:
    """The largest resident memory of ``pid`` while the block runs (sampled every 5 ms)."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()

    def __enter__(self):
        self.peak = rss_mb(self.pid)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_mb(self.pid))

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def png_header_only(width: int, height: int) -> bytes:
    """A 60-byte PNG whose header declares ``width`` x ``height`` (a decompression bomb's first bytes)."""
    import struct
    import zlib

    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def post(port: int, payload: dict, timeout: float = 300):
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models/product_category:predict",
                                     data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet_b7")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--requests", type=int, default=3)
    args = parser.parse_args()

    import numpy as np

    from benchmarks.explain_benchmark import export_model
    from benchmarks.serving_benchmark import free_port
    from placedemarche.components.infra_validator import warmup
    from placedemarche.components.serving_pusher import push as push_lib

    tmp = tempfile.mkdtemp(prefix="huge-pictures-")
    model_dir = export_model(args.backbone, args.image_size, os.path.join(tmp, "model"))
    push_lib.push(model_dir, os.path.join(tmp, "serving"), "product_category")
    port, grpc_port = free_port(), free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "placedemarche.pipeline.cli", "-q", "serve", "--local", "--model-base-path",
         os.path.join(tmp, "serving", "product_category"), "--rest-port", str(port), "--grpc-port", str(grpc_port),
         "--set", "serving.max_request_mb=200"],
        cwd=str(REPO), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = {"backbone": args.backbone, "image_size": args.image_size, "sizes": {}}
    try:
        deadline = time.time() + 600
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models/product_category", timeout=5) as r:
                    if b"AVAILABLE" in r.read():
                        break
            except OSError:
                pass
            time.sleep(1)
        from placedemarche.serving import client as client_lib

        grpc = client_lib.make_client("grpc", client_lib.ClientConfig("127.0.0.1", grpc_port, timeout_s=300, retries=0))
        small = warmup.large_jpeg(640, 480)
        grpc.predict([small])
        for _ in range(3):  # warm up the request path
            post(port, {"instances": [{"b64": base64.b64encode(small).decode()}]})
        time.sleep(1)
        idle = rss_mb(server.pid)
        results["idle_rss_mb"] = round(idle, 1)
        for megapixels, (width, height) in SIZES.items():
            data = warmup.large_jpeg(width, height, quality=85)
            body = {"instances": [{"b64": base64.b64encode(data).decode()}]}
            latencies, grpc_latencies = [], []
            with PeakSampler(server.pid) as peak:
                for _ in range(args.requests):
                    start = time.perf_counter()
                    status, answer = post(port, body)
                    latencies.append(time.perf_counter() - start)
                    if status != 200:
                        raise SystemExit(f"{megapixels} MP: HTTP {status}: {answer}")
                    start = time.perf_counter()
                    grpc.predict([data])  # the raw bytes, no base64 / JSON
                    grpc_latencies.append(time.perf_counter() - start)
            results["sizes"][megapixels] = {
                "width": width, "height": height, "jpeg_bytes": len(data),
                "rest_median_ms": round(float(np.median(latencies)) * 1000, 1),
                "grpc_median_ms": round(float(np.median(grpc_latencies)) * 1000, 1),
                "peak_above_idle_mb": round(peak.peak - idle, 1)}
            row = results["sizes"][megapixels]
            print(f"{megapixels:>4} MP ({width} x {height}, {len(data) / 1e6:.1f} MB): REST {row['rest_median_ms']} ms, "
                  f"gRPC {row['grpc_median_ms']} ms, +{row['peak_above_idle_mb']} MB", flush=True)
        # A PNG over the cap: refused by name, before decoding; the server still answers afterwards.
        status, answer = post(port, {"instances": [{"b64": base64.b64encode(png_header_only(100_000, 100_000)).decode()}]})
        after, _ = post(port, {"instances": [{"b64": base64.b64encode(small).decode()}]})
        results["over_the_cap"] = {"status": status, "error": answer.get("error"), "next_request_status": after}
    finally:
        server.terminate()
        server.wait(timeout=30)
    one, ninety_four = results["sizes"][1], results["sizes"][94]
    for protocol in ("rest", "grpc"):
        results[f"{protocol}_latency_ratio_94_vs_1"] = round(
            ninety_four[f"{protocol}_median_ms"] / one[f"{protocol}_median_ms"], 2)
    print(json.dumps(results, indent=2))
    print(f"\n94 MP vs 1 MP latency: REST {results['rest_latency_ratio_94_vs_1']} x, gRPC "
          f"{results['grpc_latency_ratio_94_vs_1']} x (target <= 1.5); 94 MP peak memory above idle: "
          f"{ninety_four['peak_above_idle_mb']} MB (target < 300)")


if __name__ == "__main__":
    main()
