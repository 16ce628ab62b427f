"""Load test of a running ``imr-outcome serve``: throughput, latency, status counts, memory.

Usage:
    imr-outcome serve --model models:/imr-outcome@champion --port 8000 &
    python experiments/load_test.py --url http://127.0.0.1:8000 --server-pid $! \\
        [--requests 400] [--concurrency 50] [--malformed 0.1] [--explain 0.05] [--runs 3]

Each run sends ``--requests`` requests from ``--concurrency`` concurrent clients (httpx,
asyncio). A fraction ``--malformed`` of them is malformed, cycling through the bad-input
classes the API must answer with 4xx (missing, empty, wrongly typed or unknown fields,
text over the server's ``max_chars``, too many batch items, non-UTF-8 and truncated JSON,
an out-of-range age, a lone UTF-16 surrogate, text without letters). The rest are valid
``POST /v1/predict`` calls on invented cases (request + a 120-250 word summary), a
fraction ``--explain`` of them with evidence. A server with an API key gets it from
``IMR_OUTCOME_API_KEY``.

Per run it prints throughput (requests/s over the run's wall time), p50/p95/p99 latency
(all requests, and valid requests without evidence), counts by status and by request
class, and the server's resident set size (``VmRSS`` of ``--server-pid``) after the run.
At the end it checks the targets: no 5xx, every malformed request answered 4xx, and RSS
after the last run within ``--rss-tolerance`` of RSS after the first run; the exit code
is 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REQUESTS = [
    "Physical therapy 2 times a week for 6 weeks for the lumbar spine",
    "Norco 10/325mg #90",
    "MRI of the right knee without contrast",
    "Lumbar epidural steroid injection at L4-L5",
    "Acupuncture 6 sessions for the cervical spine",
    "TENS unit rental for 30 days",
    "Tramadol ER 150mg #30",
    "Functional restoration program 160 hours",
]
SENTENCES = [
    "The injured worker is a {age} year old {sex} who injured the {part} while lifting at work.",
    "The patient reports chronic pain rated {pain}/10 radiating to the {side} leg.",
    "Examination showed tenderness of the {part} with decreased range of motion.",
    "Treatment to date has included medications, a home exercise program and rest.",
    "Prior physical therapy gave temporary relief without objective functional improvement.",
    "The physician documented functional improvement and a return to modified duty.",
    "An MRI showed a disc protrusion with mild foraminal stenosis.",
    "Medications include naproxen, omeprazole and cyclobenzaprine.",
    "The treating physician requested continued care to reduce pain and improve function.",
    "Urine drug screens have been consistent with the prescribed medications.",
    "There is no documentation of failed conservative care.",
    "Electrodiagnostic studies were normal; the neurological examination was intact.",
]
PARTS = ["lumbar spine", "right knee", "cervical spine", "left shoulder", "right wrist"]


def invented_case(rng: random.Random) -> dict[str, Any]:
    """A valid predict body: a request and a 120-250 word invented summary."""
    words = 0
    sentences = []
    target = rng.randint(120, 250)
    while words < target:
        sentence = rng.choice(SENTENCES).format(
            age=rng.randint(25, 65),
            sex=rng.choice(["male", "female"]),
            part=rng.choice(PARTS),
            pain=rng.randint(3, 9),
            side=rng.choice(["left", "right"]),
        )
        sentences.append(sentence)
        words += len(sentence.split())
    return {"request": rng.choice(REQUESTS), "summary": " ".join(sentences)}


def malformed(kind: str, rng: random.Random, card: dict[str, Any]) -> tuple[str, bytes]:
    """(path, body) of one malformed request of class ``kind``."""
    case = invented_case(rng)
    bodies: dict[str, Any] = {
        "missing request": {"summary": case["summary"]},
        "empty request": {"request": "  ", "summary": case["summary"]},
        "request not text": {"request": 42, "summary": case["summary"]},
        "unknown field": {**case, "decision": "Upheld"},
        "summary over limit": {**case, "summary": "pain " * (card["max_chars"] // 5 + 1)},
        "age out of range": {**case, "metadata": {"patient_age": 999}},
        "too many items": {"items": [case] * (card["max_batch_items"] + 1)},
        "no letters": {**case, "summary": "12/03/2015 -- #90 ..."},
    }
    if kind == "lone surrogate":  # valid JSON, invalid Unicode
        return "/v1/predict", b'{"request": "\\ud800MRI", "summary": "x"}'
    if kind == "non-utf8":
        return "/v1/predict", b'{"request": "caf\xe9", "summary": "x"}'
    if kind == "truncated json":
        return "/v1/predict", json.dumps(case).encode()[:-7]
    path = "/v1/predict/batch" if kind == "too many items" else "/v1/predict"
    return path, json.dumps(bodies[kind]).encode()


MALFORMED_KINDS = [
    "missing request",
    "empty request",
    "request not text",
    "unknown field",
    "summary over limit",
    "age out of range",
    "too many items",
    "non-utf8",
    "truncated json",
    "lone surrogate",
    "no letters",
]


def auth_headers() -> dict[str, str]:
    """``Authorization: Bearer`` from ``IMR_OUTCOME_API_KEY`` when the server has a key."""
    key = os.environ.get("IMR_OUTCOME_API_KEY", "").strip()
    return {"Authorization": f"Bearer {key}"} if key else {}


@dataclass(frozen=True)
class Result:
    kind: str  # "valid", "valid+explain" or "malformed:<class>"
    status: int  # HTTP status, or 0 for a transport error
    seconds: float


def plan(n: int, malformed_fraction: float, explain_fraction: float, seed: int) -> list[str]:
    """The request classes of one run, shuffled: exact counts, not random draws."""
    n_bad = round(n * malformed_fraction)
    n_explain = round(n * explain_fraction)
    kinds = [f"malformed:{MALFORMED_KINDS[i % len(MALFORMED_KINDS)]}" for i in range(n_bad)]
    kinds += ["valid+explain"] * n_explain + ["valid"] * (n - n_bad - n_explain)
    random.Random(seed).shuffle(kinds)
    return kinds


async def one_run(
    url: str, kinds: list[str], concurrency: int, card: dict[str, Any], seed: int
) -> tuple[list[Result], float]:
    """Send every request of ``kinds`` from ``concurrency`` clients; returns results, wall s."""
    queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
    for index, kind in enumerate(kinds):
        queue.put_nowait((index, kind))
    results: list[Result] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Content-Type": "application/json", **auth_headers()}

    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:

        async def worker(number: int) -> None:
            rng = random.Random(seed * 1000 + number)
            while not queue.empty():
                _, kind = queue.get_nowait()
                if kind.startswith("malformed:"):
                    path, body = malformed(kind.removeprefix("malformed:"), rng, card)
                else:
                    path = "/v1/predict"
                    body = json.dumps(
                        {**invented_case(rng), "explain": kind == "valid+explain"}
                    ).encode()
                started = time.perf_counter()
                try:
                    response = await client.post(path, content=body, headers=headers)
                    status = response.status_code
                except httpx.HTTPError:
                    status = 0
                results.append(Result(kind, status, time.perf_counter() - started))

        started = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(concurrency)))
        wall = time.perf_counter() - started
    return results, wall


def percentiles(seconds: list[float]) -> str:
    if len(seconds) < 2:
        return "n/a"
    cuts = statistics.quantiles(seconds, n=100, method="inclusive")
    return " ".join(f"p{p}={cuts[p - 1] * 1000:.0f}ms" for p in (50, 95, 99))


def rss_mib(pid: int | None) -> float | None:
    """Resident set size of ``pid`` in MiB (Linux ``/proc``), or None."""
    if pid is None:
        return None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def report(run: int, results: list[Result], wall: float, rss: float | None) -> None:
    statuses = Counter(r.status for r in results)
    by_kind = Counter((r.kind.split(":")[0], r.status) for r in results)
    print(f"run {run}: {len(results)} requests in {wall:.1f} s = {len(results) / wall:.1f} req/s")
    answered = sum(1 for r in results if r.kind.startswith("valid") and r.status == 200)
    print(f"  valid requests answered 200: {answered} = {answered / wall:.2f} per s")
    print(f"  latency all:            {percentiles([r.seconds for r in results])}")
    plain = [r.seconds for r in results if r.kind == "valid"]
    explained = [r.seconds for r in results if r.kind == "valid+explain"]
    print(f"  latency valid:          {percentiles(plain)}")
    print(f"  latency valid+explain:  {percentiles(explained)} (n={len(explained)})")
    print(f"  status counts:          {dict(sorted(statuses.items()))}")
    print(f"  by class and status:    {dict(sorted(by_kind.items()))}")
    if rss is not None:
        print(f"  server RSS after run:   {rss:.0f} MiB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--server-pid", type=int, default=None, help="for RSS readings")
    parser.add_argument("--requests", type=int, default=400, help="requests per run")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--malformed", type=float, default=0.1, help="malformed fraction")
    parser.add_argument("--explain", type=float, default=0.05, help="fraction with evidence")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--rss-tolerance", type=float, default=0.05, help="allowed RSS growth, last vs first run"
    )
    args = parser.parse_args()

    card = (
        httpx.get(f"{args.url}/v1/model", headers=auth_headers(), timeout=30)
        .raise_for_status()
        .json()
    )
    print(
        f"model {card['name']} version {card['version']} ({card['kind']}); "
        f"{args.requests} requests x {args.runs} runs, {args.concurrency} clients, "
        f"{args.malformed:.0%} malformed, {args.explain:.0%} with evidence"
    )
    print(f"server RSS before: {rss_mib(args.server_pid) or 'n/a'} MiB")
    rss_after: list[float] = []
    all_results: list[Result] = []
    for run in range(1, args.runs + 1):
        kinds = plan(args.requests, args.malformed, args.explain, args.seed + run)
        results, wall = asyncio.run(
            one_run(args.url, kinds, args.concurrency, card, args.seed + run)
        )
        rss = rss_mib(args.server_pid)
        if rss is not None:
            rss_after.append(rss)
        report(run, results, wall, rss)
        all_results += results

    server_errors = sum(r.status >= 500 or r.status == 0 for r in all_results)
    bad = [r for r in all_results if r.kind.startswith("malformed:")]
    bad_4xx = sum(400 <= r.status < 500 for r in bad)
    checks = {
        "zero 5xx / transport errors": server_errors == 0,
        f"malformed answered 4xx ({bad_4xx}/{len(bad)})": bad_4xx == len(bad),
    }
    if len(rss_after) >= 2:
        growth = rss_after[-1] / rss_after[0] - 1
        checks[f"RSS growth first->last run {growth:+.1%}"] = growth <= args.rss_tolerance
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}: {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
