"""Which FAISS index a space's main index gets, by its size, when the factory is "auto".

- Exact (Flat) while a query's brute-force scan costs at most about 1 ms: up to
  EXACT_MAX_CELLS stored floats (vectors x dimension; 5,000 vectors of 1280-d, 25,000 of
  256-d). bench/bench_ann.py --crossover measured HNSW32 faster at every size from 1,000
  up (5,000 x 1280: Flat 0.96 ms, HNSW32 0.17 ms at recall 0.99), so this is a choice of
  exact answers while they are cheap, not of speed.
- HNSW32 while the vectors fit the memory budget: the fastest index at recall >= 0.95 in
  bench_ann (docs/performance.md), no training, grows by insertion.
- IVF-PQ with exact re-ranking of the top candidates (`RFlat`) beyond it: compressed codes
  are scanned, the stored vectors re-rank; nlist ~ 4 sqrt(n), retrained as the archive grows.

A configured factory string other than "auto" is used as given, at every size.
"""

from __future__ import annotations

import math
import os

AUTO = "auto"
EXACT_MAX_CELLS = 6_400_000
HNSW_FACTORY = "HNSW32"
HNSW_BYTES_PER_VECTOR_LINKS = 32 * 2 * 4 + 16
"""HNSW32: about 2M neighbour ids of 4 bytes per vector at level 0, plus level bookkeeping."""
RETRAIN_GROWTH = 4.0
"""A trained main index (IVF) is retrained once the archive holds this many times the
vectors it was trained on: its coarse lists were sized and placed for the smaller one."""


def memory_budget_bytes() -> int:
    """Half of this machine's physical memory: what an in-memory index may take."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError):
        return 8 << 30


def nlist_for(count: int) -> int:
    """A power of two near 4 sqrt(count), at least 16 (FAISS's guideline for IVF lists)."""
    return max(16, 1 << round(math.log2(4 * math.sqrt(max(count, 1)))))  # 2**n typed as Any


def pq_subquantizers(dim: int) -> int:
    """Bytes per PQ code: dim/4 sub-vectors (4 dims each), a divisor of dim, at most 64."""
    for m in (64, 48, 32, 16, 8, 4, 2, 1):
        if dim % m == 0 and m * 4 <= max(dim, 4):
            return m
    return 1


def choose_factory(count: int, dim: int, memory_bytes: int | None = None) -> str:
    """The factory for a main index of `count` vectors of `dim` floats."""
    if count * dim <= EXACT_MAX_CELLS:
        return "Flat"
    budget = memory_budget_bytes() if memory_bytes is None else memory_bytes
    if count * (dim * 4 + HNSW_BYTES_PER_VECTOR_LINKS) <= budget:
        return HNSW_FACTORY
    return f"IVF{nlist_for(count)},PQ{pq_subquantizers(dim)},RFlat"


def family(factory: str) -> str:
    """Flat / HNSW / IVF: what changes the shape of an index (nlist changes only retrain)."""
    head = factory.split(",")[0]
    for name in ("HNSW", "IVF"):
        if head.startswith(name):
            return name
    return head


def needs_rebuild(wanted: str, built: str, count: int, trained_on: int) -> bool:
    """Whether a main index built as `built` on `trained_on` vectors should be rebuilt now
    that it would hold `count` and the size calls for `wanted`: another family, or a trained
    index that outgrew its training."""
    if family(wanted) != family(built):
        return True
    trainable = family(built) == "IVF" or "PQ" in built
    return trainable and count >= RETRAIN_GROWTH * max(trained_on, 1)
