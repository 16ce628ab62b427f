"""One long explained request against a running ``imr-outcome serve``, with a small one beside it.

Usage:
    imr-outcome serve --model models:/imr-outcome@champion --port 8000 &
    python experiments/long_request.py --url http://127.0.0.1:8000 --server-pid $! \\
        [--chars 99000] [--deadline 60]

Issue 14: an explained 99k-character summary (under the 100k limit) held the only model
slot for about 10 minutes and left RSS 1.4 GB higher. This script:

1. reads the server's RSS (``VmRSS`` of ``--server-pid``) after a warm-up request;
2. sends ``POST /v1/predict`` with ``explain: true`` and a ``--chars`` invented summary;
3. one second later sends a small unexplained request from a second client;
4. prints both statuses and times, the warnings of the long answer, and the RSS 5 s
   after the long request ended (and its change against step 1).

The exit code is 1 when a target is missed: the long request answered (2xx) or refused
(4xx/504) within ``--deadline`` seconds, the small one answered 200, and RSS back within
``--rss-tolerance`` of the level before.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from typing import Any

import httpx
from load_test import auth_headers, invented_case, rss_mib


def long_summary(chars: int, rng: random.Random) -> str:
    """Invented summary text of exactly ``chars`` characters (sentences of the load test)."""
    parts: list[str] = []
    total = 0
    while total < chars:
        part = invented_case(rng)["summary"]
        parts.append(part)
        total += len(part) + 1
    return " ".join(parts)[:chars]


async def post(
    client: httpx.AsyncClient, body: dict[str, Any], delay_s: float
) -> tuple[int, float, dict[str, Any]]:
    """(status, seconds, JSON body or {}) of one ``POST /v1/predict`` after ``delay_s``."""
    await asyncio.sleep(delay_s)
    started = time.perf_counter()
    try:
        response = await client.post("/v1/predict", json=body, headers=auth_headers())
    except httpx.HTTPError as exc:
        return 0, time.perf_counter() - started, {"transport error": str(exc)}
    seconds = time.perf_counter() - started
    try:
        answer = response.json()
    except json.JSONDecodeError:
        answer = {}
    return response.status_code, seconds, answer


async def main_async(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    async with httpx.AsyncClient(base_url=args.url, timeout=600) as client:
        await post(client, invented_case(rng), 0)  # warm-up
        before = rss_mib(args.server_pid)
        long_body = {
            "request": "Lumbar fusion L4-L5",
            "summary": long_summary(args.chars, rng),
            "explain": True,
        }
        small_body = invented_case(rng)
        (long_status, long_s, long_answer), (small_status, small_s, _) = await asyncio.gather(
            post(client, long_body, 0), post(client, small_body, 1.0)
        )
    await asyncio.sleep(5)
    after = rss_mib(args.server_pid)
    print(f"long request ({args.chars} chars, explain): HTTP {long_status} in {long_s:.1f} s")
    for warning in long_answer.get("warnings", []) or []:
        print(f"  warning: {warning}")
    if long_status >= 400:
        print(f"  body: {json.dumps(long_answer)[:300]}")
    print(f"small request beside it: HTTP {small_status} in {small_s:.1f} s")
    change = None
    if before is not None and after is not None:
        change = (after - before) / before
        print(f"server RSS: {before:.0f} MiB before, {after:.0f} MiB 5 s after ({change:+.1%})")
    missed = []
    if long_s > args.deadline or long_status in (0, 500, 502, 503):
        missed.append(f"long request: HTTP {long_status} after {long_s:.1f} s")
    if small_status != 200:
        missed.append(f"small request: HTTP {small_status}")
    if change is not None and abs(change) > args.rss_tolerance:
        missed.append(f"RSS changed {change:+.1%}")
    print("targets: " + ("met" if not missed else "MISSED: " + "; ".join(missed)))
    return 1 if missed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--server-pid", type=int, default=None, help="for RSS readings")
    parser.add_argument("--chars", type=int, default=99_000, help="summary length")
    parser.add_argument("--deadline", type=float, default=60.0, help="seconds")
    parser.add_argument("--rss-tolerance", type=float, default=0.10)
    parser.add_argument("--seed", type=int, default=0)
    sys.exit(asyncio.run(main_async(parser.parse_args())))


if __name__ == "__main__":
    main()
