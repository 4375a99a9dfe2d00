"""Latency and throughput of a real ``pneumocxr serve`` process at 1, 4 and 16 concurrent clients.

Measured side by side in one run, against one server process (loopback, ``--no-auth``, its own
temporary audit database), on real radiographs read into memory once:

- per level: requests, throughput, p50/p95/p99 end-to-end latency (client-side: upload, decode,
  model, audit commit, answer), errors (anything but 200, and transport errors);
- server RSS (``/proc/PID/status``) after the warm-up and after each level: flat memory or not;
- model-slot utilisation: the server's own ``pneumocxr_model_seconds`` sum over the level's wall
  time (1.0 = the model slot never idles: more clients only queue; that is where micro-batching
  would be the next lever).

Bounded in time and count: each level stops at ``--seconds`` or ``--max-requests``. The clients are
threads in this process (httpx, one keep-alive connection each): on a small machine they compete
with the server for the CPU, as a reverse proxy on the same host would.

    python bench/serve.py --model output/models/efficientnet_lite0.pt
    python bench/serve.py --model output/models/efficientnet_lite0.pt --clients 1 4 16 --seconds 20
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "chest_xray" / "train"
AIM_P50_1_MS, AIM_P99_16_MS = 25.0, 150.0  # the aims on 2 cores with EfficientNet-Lite0


def real_images(root: Path, count: int) -> list[bytes]:
    """``count`` real full-size films (the originals, not the 224-px copies beside them), half NORMAL
    and half PNEUMONIA, in a fixed order."""
    from PIL import Image

    per_class = (count + 1) // 2
    chosen: list[Path] = []
    for label in ("NORMAL", "PNEUMONIA"):
        found = []
        for path in sorted((root / label).glob("*.jpeg")):
            with Image.open(path) as image:  # the header only
                if max(image.size) > 224:
                    found.append(path)
            if len(found) >= per_class:
                break
        if not found:
            raise SystemExit(
                f"no full-size JPEGs in {root / label}; pass --data pointing at chest_xray/train"
            )
        chosen += found
    return [path.read_bytes() for path in chosen[:count]]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", text).group(1)) / 1024


def model_seconds(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found = re.search(r"^pneumocxr_model_seconds_sum ([0-9.e+-]+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def start_server(model: Path, folder: Path, threads: int | None) -> tuple[subprocess.Popen, str, Path]:
    port = free_port()
    log = folder / "serve.log"
    command = [sys.executable, "-m", "pneumocxr", "serve", "--model", str(model), "--no-auth"]
    command += ["--port", str(port), "--db", str(folder / "audit.db")]
    if threads:
        command += ["--threads", str(threads)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    with log.open("w") as out:
        server = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"serve exited ({server.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return server, url, log
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    server.kill()
    raise SystemExit(f"serve not ready within 180 s:\n{log.read_text()[-3000:]}")


def drive(url: str, images: list[bytes], clients: int, seconds: float, max_requests: int) -> dict:
    """``clients`` threads posting images back to back until the time or the count runs out."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    issued = [0]
    stop_at = time.monotonic() + seconds

    def client(index: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as session:
            while time.monotonic() < stop_at:
                with lock:
                    if issued[0] >= max_requests:
                        return
                    n = issued[0]
                    issued[0] += 1
                body = images[(n * 7 + index) % len(images)]
                started = time.perf_counter()
                try:
                    answer = session.post("/v1/predict", content=body, headers={"content-type": "image/jpeg"})
                    status = answer.status_code
                except httpx.TransportError as exc:
                    status = type(exc).__name__
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    if status != 200:
                        errors.append(str(status))

    before = model_seconds(url)
    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 120)
    wall = time.perf_counter() - started
    busy = model_seconds(url) - before
    ms = 1000 * np.asarray(latencies)
    return {
        "clients": clients,
        "requests": len(latencies),
        "wall_s": wall,
        "throughput": len(latencies) / wall,
        "p50": float(np.percentile(ms, 50)),
        "p95": float(np.percentile(ms, 95)),
        "p99": float(np.percentile(ms, 99)),
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
        "slot_busy": busy / wall,
        "model_ms": 1000 * busy / max(1, len(latencies) - len(errors)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="checkpoint to serve")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="chest_xray/train (real films)")
    parser.add_argument("--images", type=int, default=64, help="distinct films, cycled (default 64)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--seconds", type=float, default=20.0, help="per level (default 20)")
    parser.add_argument("--max-requests", type=int, default=1500, help="per level (default 1500)")
    parser.add_argument("--threads", type=int, help="server --threads (default: its own, cores / workers)")
    args = parser.parse_args(argv)

    images = real_images(args.data, args.images)
    print(
        f"{len(images)} real full-size films, {np.median([len(b) for b in images]) / 1024:.0f} KB median; "
        f"cores: {len(os.sched_getaffinity(0))}"
    )
    print(
        f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())} (a shared machine: see below)"
    )
    with tempfile.TemporaryDirectory(prefix="pneumocxr-bench-serve-") as folder:
        server, url, _ = start_server(args.model, Path(folder), args.threads)
        try:
            drive(url, images, 1, 5.0, 20)  # warm-up: first-request costs, page cache, allocator
            rss = [rss_mb(server.pid)]
            rows = []
            for clients in args.clients:
                rows.append(drive(url, images, clients, args.seconds, args.max_requests))
                rss.append(rss_mb(server.pid))
        finally:
            server.kill()
            server.wait(timeout=30)
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    report(rows, rss)
    return 0


def report(rows: list[dict], rss: list[float]) -> None:
    base = rows[0]
    print()
    print(
        "| clients | requests | req/s | × 1 client | p50 ms | p95 ms | p99 ms | errors | model ms/req "
        "| model slot busy | server RSS MB after |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row, after in zip(rows, rss[1:]):
        kinds = f" ({', '.join(row['error_kinds'])})" if row["errors"] else ""
        print(
            f"| {row['clients']} | {row['requests']} | {row['throughput']:.1f} "
            f"| {row['throughput'] / base['throughput']:.2f} | {row['p50']:.1f} | {row['p95']:.1f} "
            f"| {row['p99']:.1f} | {row['errors']}{kinds} "
            f"| {row['model_ms']:.1f} | {row['slot_busy']:.2f} | {after:.0f} |"
        )
    print(
        f"\nserver RSS after warm-up {rss[0]:.0f} MB → after the last level {rss[-1]:.0f} MB "
        f"({rss[-1] - rss[0]:+.0f} MB)"
    )
    one = next((r for r in rows if r["clients"] == 1), None)
    many = next((r for r in rows if r["clients"] == 16), None)
    if one is not None:
        verdict = "met" if one["p50"] <= AIM_P50_1_MS else "missed"
        print(f"aim p50 <= {AIM_P50_1_MS:g} ms at 1 client: {one['p50']:.1f} ms ({verdict})")
    if many is not None:
        verdict = "met" if many["p99"] <= AIM_P99_16_MS else "missed"
        print(f"aim p99 <= {AIM_P99_16_MS:g} ms at 16 clients: {many['p99']:.1f} ms ({verdict})")


if __name__ == "__main__":
    sys.exit(main())
