"""Benchmark: a running server follows @champion; swap time and resident memory (issue 21).

Usage:
    python experiments/bench_follow.py [--encoder offline:minilm] [--swaps 3] [--no-trim]
        [--clients 2] [--workdir DIR]

In a temporary MLflow store (nothing touches the project's ``mlflow.db``): the encoder with
a fresh classification head (same shapes and memory as a fine-tuned model, no training) is
logged and registered as ``imr-outcome`` version 1 @champion, and ``--swaps`` more versions
of the same artifact are registered. The API (``create_app``, torch backend, timer off)
serves version 1 on 127.0.0.1 under uvicorn in this process while ``--clients`` clients
send ``/v1/predict`` one after another. For each swap, @champion moves to the next version
and ``POST /v1/admin/reload`` loads, tests and swaps it in.

Printed, per swap and in all:

- RSS of this process (psutil, sampled every 10 ms): before the swap, the peak while the
  new version loads beside the old one, and after the swap once the old version has been
  released (the follower's next check frees it and trims the heap);
- the swap time: the reload call's round trip, and the follower's own figure (lookup,
  load, test prediction);
- requests answered during the swap, per version, and how many failed (expected: 0).

``--no-trim`` skips the follower's ``malloc_trim`` to show what it does to "after".
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import torch
from bench_predict import fresh_model

MIB = 1024 * 1024
NAME = "imr-outcome"
BODY = {
    "request": "Physical therapy 6 sessions for the lumbar spine",
    "summary": "The injured worker is a 50 year old with chronic low back pain after lifting "
    "boxes at work. Medications and a home exercise program did not help; the physician "
    "requested physical therapy for the lumbar spine. " * 3,
}


def _register(model_dir: Path, versions: int) -> None:
    """Log ``model_dir`` once; register it as versions 1..``versions``; 1 is @champion."""
    import mlflow
    from mlflow import MlflowClient

    from imr_outcome.train.tracking import configure, log_model, register

    configure("bench-follow")
    with mlflow.start_run():
        uri = log_model(model_dir)
    register(uri, NAME, tags={})
    client = MlflowClient()
    first = client.get_model_version(NAME, "1")
    assert first.source is not None
    for _ in range(versions - 1):
        client.create_model_version(NAME, first.source, run_id=first.run_id)


class Sampler:
    """RSS of this process every ``period_s`` seconds, on a thread, with marks."""

    def __init__(self, period_s: float = 0.01) -> None:
        self.period_s = period_s
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._process = psutil.Process()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), self._process.memory_info().rss))
            time.sleep(self.period_s)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def peak(self, start: float, end: float) -> int:
        return max(rss for at, rss in self.samples if start <= at <= end)

    @staticmethod
    def now() -> int:
        return int(psutil.Process().memory_info().rss)


class Clients:
    """``n`` clients sending ``/v1/predict`` one after another; answers by time."""

    def __init__(self, url: str, n: int) -> None:
        self.url = url
        self.answers: list[tuple[float, int, str | None]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(n)]

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=120) as client:
            while not self._stop.is_set():
                response = client.post("/v1/predict", json=BODY)
                version = response.json().get("model_version") if response.is_success else None
                self.answers.append((time.monotonic(), response.status_code, version))

    def __enter__(self) -> Clients:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)

    def between(self, start: float, end: float) -> list[tuple[float, int, str | None]]:
        return [a for a in list(self.answers) if start <= a[0] <= end]


@contextmanager
def _serving(port: int) -> Iterator[str]:
    import uvicorn

    from imr_outcome.serve.api import create_app
    from imr_outcome.serve.api_limits import ServeSettings

    settings = ServeSettings(
        model_uri=f"models:/{NAME}@champion", follow_interval_s=0, backend="torch"
    )
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.1)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", default="offline:minilm")
    parser.add_argument("--swaps", type=int, default=3)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--no-trim", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-follow-"))
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

    from mlflow import MlflowClient

    from imr_outcome.serve import model_follower

    if args.no_trim:
        model_follower._trim_heap = lambda: None

    model_dir = fresh_model(args.encoder, work / "fresh")
    size = sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file())
    _register(model_dir, args.swaps + 1)
    client = MlflowClient()
    print(
        f"model: {args.encoder} with a fresh head, {size / MIB:.0f} MiB on disk; "
        f"{args.swaps + 1} registered versions; torch threads {torch.get_num_threads()}; "
        f"malloc_trim {'off' if args.no_trim else 'on'}"
    )
    print(f"baseline RSS (libraries imported, no model): {Sampler.now() / MIB:.0f} MiB")

    rows = []
    with Sampler() as sampler, _serving(_free_port()) as url, Clients(url, args.clients) as load:
        time.sleep(3)  # warm: every client has been answered a few times
        for swap in range(1, args.swaps + 1):
            before = Sampler.now()
            client.set_registered_model_alias(NAME, "champion", str(swap + 1))
            start = time.monotonic()
            report = httpx.post(f"{url}/v1/admin/reload", timeout=300).json()
            end = time.monotonic()
            assert report["outcome"] == "swapped", report
            during = sampler.peak(start, end)
            time.sleep(1.0)  # requests finish on the old version; then it is released
            released = httpx.post(f"{url}/v1/admin/reload", timeout=300).json()
            assert released["outcome"] == "unchanged", released
            time.sleep(0.2)
            after = Sampler.now()
            answered = load.between(start, end)
            versions = sorted({str(v) for _, status, v in answered if status == 200})
            failed = sum(status != 200 for _, status, _ in answered)
            rows.append((swap, before, during, after, end - start, report["seconds"]))
            print(
                f"swap {swap}: v{report['previous']} -> v{report['version']}: "
                f"round trip {end - start:.2f} s (follower: {report['seconds']:.2f} s); "
                f"RSS before {before / MIB:.0f} MiB, peak during {during / MIB:.0f} MiB, "
                f"after {after / MIB:.0f} MiB; {len(answered)} requests answered during "
                f"the swap (versions {', '.join(versions) or '-'}), {failed} failed"
            )
    total = load.answers
    failed = sum(status != 200 for _, status, _ in total)
    print(f"all: {len(total)} requests, {failed} failed")
    first_before = rows[0][1]
    print(
        f"RSS after the last swap - before the first: "
        f"{(rows[-1][3] - first_before) / MIB:+.0f} MiB over {len(rows)} swaps; "
        f"largest peak - before: {max(r[2] - r[1] for r in rows) / MIB:+.0f} MiB"
    )


if __name__ == "__main__":
    main()
