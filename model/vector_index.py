"""Cosine nearest-neighbour search over fixed item vectors: exact or an HNSW graph.

:class:`VectorIndex` uses scikit-learn ``NearestNeighbors(metric="cosine",
algorithm="brute")`` (exact) below :data:`HNSW_MIN_ITEMS` items (and for sparse vectors);
from there on, hnswlib's HNSW graph (Malkov & Yashunin 2018, "Efficient and robust
approximate nearest neighbor search using Hierarchical Navigable Small World graphs",
IEEE TPAMI 42(4)). A search may be restricted to allowed items (hnswlib's ``filter`` on a
graph). The switch point and the latencies are measured by
``experiments/bench_similar.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from sklearn.neighbors import NearestNeighbors

from imr_outcome.errors import IncompatibleModelError, InvalidInputError

FloatArray = npt.NDArray[np.float32]
Vectors: TypeAlias = "FloatArray | sp.csr_matrix"
"""Item vectors, shape ``(n, d)``: dense float32 or a sparse CSR matrix; rows L2-normal."""

#: Dense indexes of at least this many items use hnswlib, and TF-IDF indexes go dense
#: (LSA) to use it. Measured by experiments/bench_similar.py on 2 shared, loaded cores:
#: exact search's p50 is 9 ms (dense 384-d) / 4 ms (sparse) at 5,000 items, 23 / 7 ms at
#: 10,000, 20 / 16 ms at 20,000 and 123 / 127 ms at 100,000 (target 20 ms), while HNSW
#: answers in 0.2 ms at 100,000 with recall@5 1.00 (clustered dense) and 0.95 (LSA-256).
HNSW_MIN_ITEMS = 5_000
#: hnswlib graph settings: links per node, build and query beam widths (hnswlib's
#: recommended ranges; ef_search >= k). Seeded and built on one thread: reproducible.
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 200
HNSW_EF_SEARCH = 64


def unit_rows(vectors: npt.ArrayLike) -> FloatArray:
    """Dense vectors as float32 with rows scaled to norm 1 (zero rows stay zero).

    Args:
        vectors: shape ``(n, d)``.

    Raises:
        InvalidInputError: not two-dimensional, or not finite.
    """
    dense = np.asarray(vectors, dtype=np.float32)
    if dense.ndim != 2 or not np.isfinite(dense).all():
        raise InvalidInputError("vectors", f"expected a finite (n, d) array, got {dense.shape}")
    norms = np.linalg.norm(dense, axis=1, keepdims=True)
    unit: FloatArray = (dense / np.where(norms > 0, norms, 1.0)).astype(np.float32)
    return unit


class VectorIndex:
    """Cosine k-nearest-neighbour search over fixed item vectors.

    Args:
        vectors: shape ``(n, d)``, dense (made unit-norm here) or sparse CSR (already
            normalised by its representation).
        backend: ``"auto"`` (hnswlib for dense indexes of >= :data:`HNSW_MIN_ITEMS`
            items, else exact), ``"exact"`` (``NearestNeighbors``) or ``"hnsw"``.

    Raises:
        InvalidInputError: no vectors, an unknown backend, or hnsw on sparse vectors.
    """

    def __init__(self, vectors: Vectors | npt.ArrayLike, backend: str = "auto") -> None:
        if backend not in ("auto", "exact", "hnsw"):
            raise InvalidInputError("backend", f"expected auto, exact or hnsw, got {backend!r}")
        self.sparse = sp.issparse(vectors)
        stored: Vectors = (
            sp.csr_matrix(vectors, dtype=np.float32) if self.sparse else unit_rows(vectors)
        )
        self.n, self.dim = int(stored.shape[0]), int(stored.shape[1])
        if self.n == 0:
            raise InvalidInputError("vectors", "no items to index")
        if backend == "auto":
            backend = "hnsw" if not self.sparse and self.n >= HNSW_MIN_ITEMS else "exact"
        if backend == "hnsw" and self.sparse:
            raise InvalidInputError("backend", "hnsw needs dense vectors; use exact")
        self.backend = backend
        # The exact backend keeps the vectors; an HNSW graph holds its own copy.
        self.vectors: Vectors | None = stored if backend == "exact" else None
        self._search: Any = self._build(stored)

    def __len__(self) -> int:
        return self.n

    def _build(self, vectors: Vectors) -> Any:
        if self.backend == "exact":
            return NearestNeighbors(metric="cosine", algorithm="brute").fit(vectors)
        import hnswlib

        index = hnswlib.Index(space="cosine", dim=self.dim)
        index.init_index(
            max_elements=self.n, ef_construction=HNSW_EF_CONSTRUCTION, M=HNSW_M, random_seed=1
        )
        index.set_num_threads(1)
        index.add_items(np.asarray(vectors), np.arange(self.n))
        index.set_ef(HNSW_EF_SEARCH)
        return index

    def search(
        self,
        queries: Vectors | npt.ArrayLike,
        k: int,
        allowed: npt.NDArray[np.bool_] | None = None,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """The ``k`` most similar items of each query.

        Args:
            queries: shape ``(q, d)``, the same representation as the index.
            k: neighbours per query, 1 <= k (capped at the index size).
            allowed: shape ``(n,)``: only these items may be returned (hnswlib's
                ``filter`` on an HNSW graph, a ranked scan on the exact backend).

        Returns:
            ``(indices, similarities)``, each shape ``(q, min(k, n))`` (``n``: the
            allowed items), most similar first; similarities are cosines.

        Raises:
            InvalidInputError: ``k`` < 1 or a dimension mismatch.
        """
        if k < 1:
            raise InvalidInputError("k", f"must be >= 1, got {k}")
        k = min(k, self.n)
        q: Vectors = sp.csr_matrix(queries, dtype=np.float32) if self.sparse else unit_rows(queries)
        if q.shape[1] != self.dim:
            raise InvalidInputError("vectors", f"expected dimension {self.dim}, got {q.shape[1]}")
        if allowed is not None:
            return self._search_allowed(q, k, allowed)
        if self.backend == "exact":
            distances, indices = self._search.kneighbors(q, n_neighbors=k)
        else:
            self._search.set_ef(max(HNSW_EF_SEARCH, k))
            indices, distances = self._search.knn_query(np.asarray(q), k=k)
        return indices.astype(np.int64), 1.0 - distances.astype(np.float64)

    def _search_allowed(
        self, q: Vectors, k: int, allowed: npt.NDArray[np.bool_]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        if allowed.shape != (self.n,):
            raise InvalidInputError("allowed", f"expected shape ({self.n},), got {allowed.shape}")
        k = min(k, int(allowed.sum()))
        if k < 1:
            return np.zeros((q.shape[0], 0), np.int64), np.zeros((q.shape[0], 0))
        if self.backend == "exact":
            indices, similarities = self.search(q, self.n)
            keep = allowed[indices]
            shape = (indices.shape[0], -1)
            return (
                indices[keep].reshape(shape)[:, :k],
                similarities[keep].reshape(shape)[:, :k],
            )
        self._search.set_ef(max(HNSW_EF_SEARCH, k))
        try:
            indices, distances = self._search.knn_query(
                np.asarray(q), k=k, filter=lambda i: bool(allowed[i])
            )
        except RuntimeError:
            # hnswlib could not reach k allowed items through the graph: rank them all.
            ids = np.flatnonzero(allowed)
            cosines = unit_rows(np.asarray(q)) @ unit_rows(self._search.get_items(ids)).T
            order = np.argsort(-cosines, axis=1, kind="stable")[:, :k]
            return ids[order], np.take_along_axis(cosines, order, axis=1).astype(np.float64)
        return indices.astype(np.int64), 1.0 - distances.astype(np.float64)

    def save(self, directory: Path) -> None:
        """Write the vectors (exact) or the HNSW graph into ``directory`` (created)."""
        directory.mkdir(parents=True, exist_ok=True)
        if self.backend == "hnsw":
            self._search.save_index(str(directory / "hnsw.bin"))
        elif self.sparse:
            sp.save_npz(directory / "vectors.npz", self.vectors)
        else:
            assert self.vectors is not None
            np.save(directory / "vectors.npy", self.vectors)
        meta = {"backend": self.backend, "sparse": self.sparse, "n": self.n, "dim": self.dim}
        (directory / "index.json").write_text(json.dumps(meta) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> VectorIndex:
        """Read an index :meth:`save` wrote (an HNSW graph is loaded, not rebuilt).

        Raises:
            IncompatibleModelError: files missing.
        """
        meta_path = directory / "index.json"
        if not meta_path.is_file():
            raise IncompatibleModelError(f"{meta_path} is missing; re-register the model")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        self = cls.__new__(cls)
        self.sparse, self.backend = bool(meta["sparse"]), str(meta["backend"])
        self.n, self.dim = int(meta["n"]), int(meta["dim"])
        self.vectors = None
        if self.backend == "hnsw":
            import hnswlib

            index = hnswlib.Index(space="cosine", dim=self.dim)
            index.load_index(str(directory / "hnsw.bin"), max_elements=self.n)
            index.set_num_threads(1)
            index.set_ef(HNSW_EF_SEARCH)
            self._search = index
            return self
        self.vectors = (
            sp.csr_matrix(sp.load_npz(directory / "vectors.npz"))
            if self.sparse
            else np.load(directory / "vectors.npy")
        )
        self._search = self._build(self.vectors)
        return self
