"""Similar-decisions retrieval latency: exact NearestNeighbors vs hnswlib (issue 20).

For each index size (the real DWC dataset's size, 5,000, 10,000, 20,000 and 100,000
synthetic items) and representation (dense unit vectors of the MiniLM's 384 dimensions;
sparse TF-IDF rows),
builds a :class:`~imr_outcome.model.precedents.PrecedentIndex` with each backend, then
times one query at a time (k=5, the query's own letter excluded), by similarity alone and
like requests first (what serving does; synthetic request kinds), in turns, and prints a
table:
build seconds, on-disk size, p50 / p95 latency in ms, and recall@5 of hnswlib against
the exact answer. Synthetic TF-IDF rows draw ~150
terms each from a Zipf(1.1) vocabulary of 50,000 terms (the real index's sparsity); the
LSA rows project those on 256 singular vectors (what a TF-IDF record of that size
indexes). Synthetic dense vectors are clustered (one centre per 100 items), since ANN
recall on structureless Gaussian noise says nothing about real embeddings. The
real-size TF-IDF row uses the real dataset's vectors when ``--dataset`` is given.

    .venv/bin/python experiments/bench_similar.py --dataset artifacts/dataset
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from imr_outcome.model.precedents import Precedent, PrecedentIndex
from imr_outcome.model.vector_index import VectorIndex

DIM = 384
VOCABULARY = 50_000
TERMS_PER_ITEM = 150


#: Synthetic request kinds: categories and the items inside them (Zipf-like shares, as
#: the real letters: physical therapy and lumbar MRI common, most items rare).
CATEGORIES = 12
ITEMS = 120


def _kind(i: int) -> tuple[str, str | None]:
    item = int(ITEMS * (((i * 7919) % 1000) / 1000) ** 2)
    return f"category {item % CATEGORIES}", (f"item {item}" if item % 4 else None)


def _precedents(n: int) -> tuple[list[Precedent], list[tuple[str, str]]]:
    items = [
        Precedent(
            f"CM99-{i // 2:07d}#{i % 2}",
            f"CM99-{i // 2:07d}",
            None,
            2016,
            "x",
            "Upheld",
            None,
            _kind(i)[0],
            0.0,
            _kind(i)[1],
        )
        for i in range(n)
    ]
    return items, [(p.case_number, p.case_number) for p in items]


def _dense(n: int, rng: np.random.Generator) -> npt.NDArray[np.float32]:
    """Clustered like real embeddings: 1 centre per 100 items, within-cluster cos ~0.67."""
    centres = rng.standard_normal((max(1, n // 100), DIM), dtype=np.float32)
    members = centres[rng.integers(0, len(centres), size=n)]
    return members + 0.7 * rng.standard_normal((n, DIM), dtype=np.float32)


def _lsa(matrix: sp.csr_matrix) -> tuple[npt.NDArray[np.float32], float]:
    from sklearn.decomposition import TruncatedSVD

    from imr_outcome.model.precedents import LSA_COMPONENTS
    from imr_outcome.model.vector_index import unit_rows

    start = time.perf_counter()
    reduced = TruncatedSVD(n_components=LSA_COMPONENTS, random_state=0).fit_transform(matrix)
    return unit_rows(reduced), time.perf_counter() - start


def _sparse(n: int, rng: np.random.Generator) -> sp.csr_matrix:
    ranks = np.arange(1, VOCABULARY + 1)
    p = 1.0 / ranks**1.1
    p /= p.sum()
    cols = rng.choice(VOCABULARY, size=(n, TERMS_PER_ITEM), p=p)
    rows = np.repeat(np.arange(n), TERMS_PER_ITEM)
    values = rng.random(n * TERMS_PER_ITEM).astype(np.float32)
    matrix = sp.csr_matrix((values, (rows, cols.ravel())), shape=(n, VOCABULARY))
    matrix.sum_duplicates()
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1))).ravel()
    return sp.csr_matrix(sp.diags(1 / norms) @ matrix, dtype=np.float32)


def _real_tfidf(dataset: Path) -> sp.csr_matrix:
    from imr_outcome.data.dataset import load_dataset, records_from_split
    from imr_outcome.data.model_input import record_model_input
    from imr_outcome.model.precedents import TfidfRepresentation

    split = load_dataset(dataset)["dwc"]
    inputs = [record_model_input(r) for r in records_from_split(split)]
    return TfidfRepresentation().fit(inputs).transform(inputs)


def _size_mb(directory: Path) -> float:
    return sum(f.stat().st_size for f in directory.rglob("*") if f.is_file()) / 1e6


def _bench(
    name: str, vectors: npt.NDArray[np.float32] | sp.csr_matrix, backend: str, queries: int
) -> tuple[str, dict[str, list[list[str]]]]:
    n = vectors.shape[0]
    precedents, groups = _precedents(n)
    start = time.perf_counter()
    index = PrecedentIndex(precedents, groups, VectorIndex(vectors, backend=backend))
    build = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        index.save(Path(tmp))
        size = _size_mb(Path(tmp))
    rng = np.random.default_rng(7)
    picks = rng.choice(n, size=queries, replace=False)
    times: dict[str, list[float]] = {"plain": [], "like": []}
    found: dict[str, list[list[str]]] = {"plain": [], "like": []}
    for i in picks:
        query = vectors[i : i + 1]
        # One query of each ranking in turns: by similarity alone, and like requests
        # first (what serving does).
        for mode, like in (("plain", None), ("like", [_kind(int(i) + 1)])):
            t0 = time.perf_counter()
            result = index.query(query, k=5, exclude_groups=[groups[i][0]], like=like)
            times[mode].append((time.perf_counter() - t0) * 1000)
            found[mode].append([p.item_id for p in result[0]])
    plain, like_first = (np.percentile(times[m], [50, 95]) for m in ("plain", "like"))
    row = (
        f"| {name} | {n:,} | {index.index.backend} | {build:.2f} | {size:.1f} | "
        f"{plain[0]:.2f} | {plain[1]:.2f} | {like_first[0]:.2f} | {like_first[1]:.2f} |"
    )
    return row, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=None)
    parser.add_argument("--real-size", type=int, default=444)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--mid", type=int, nargs="*", default=[5_000, 10_000, 20_000])
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rng = np.random.default_rng(13)
    real_sparse = _real_tfidf(args.dataset) if args.dataset else _sparse(args.real_size, rng)
    real = f" (real, {real_sparse.shape[0]})" if args.dataset else ""
    large_sparse = _sparse(args.large, rng)
    lsa, lsa_seconds = _lsa(large_sparse)
    cases = [
        ("dense 384-d", _dense(real_sparse.shape[0], rng), ("exact", "hnsw")),
        ("TF-IDF sparse" + real, real_sparse, ("exact",)),
        *[("dense 384-d", _dense(n, rng), ("exact",)) for n in args.mid],
        *[("TF-IDF sparse (synthetic)", _sparse(n, rng), ("exact",)) for n in args.mid],
        ("dense 384-d", _dense(args.large, rng), ("exact", "hnsw")),
        ("TF-IDF sparse (synthetic)", large_sparse, ("exact",)),
        (f"TF-IDF LSA-256 (synthetic; SVD fit {lsa_seconds:.0f} s)", lsa, ("exact", "hnsw")),
    ]
    print(
        "| vectors | items | backend | build s | on disk MB | p50 ms | p95 ms "
        "| like-first p50 ms | like-first p95 ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    recalls: list[str] = []
    for name, vectors, backends in cases:
        answers: dict[str, dict[str, list[list[str]]]] = {}
        for backend in backends:
            row, answers[backend] = _bench(name, vectors, backend, args.queries)
            print(row, flush=True)
        if "hnsw" in answers:
            recall = {
                mode: np.mean(
                    [
                        len(set(a) & set(e)) / len(e)
                        for a, e in zip(answers["hnsw"][mode], answers["exact"][mode], strict=True)
                    ]
                )
                for mode in ("plain", "like")
            }
            recalls.append(
                f"{name} x {vectors.shape[0]:,}: hnsw recall@5 {recall['plain']:.3f}, "
                f"like-first {recall['like']:.3f}"
            )
    print("\n".join(recalls))


if __name__ == "__main__":
    main()
