"""A crash at any point of a write leaves the previous manifest valid; the next write cleans up."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

import mammosearch.index.reader as reader_module
from mammosearch.index import ShardedIndex

DIM = 8


def random_vectors(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, DIM)).astype(np.float32)


def segment_files(root: Path) -> set[str]:
    return {path.name for path in root.glob("*.faiss")}


def referenced_files(index: ShardedIndex) -> set[str]:
    manifest = index._reader.view.manifest or {"segments": [], "retired": []}
    return {entry["file"] for entry in manifest["segments"]} | set(manifest["retired"])


def test_failed_manifest_replace_keeps_the_previous_version(tmp_path, monkeypatch):
    """os.replace failing mid-commit: old manifest still searchable, orphan collected next write."""
    root = tmp_path / "idx"
    writer = ShardedIndex(root, DIM, "l2", segment_size=4)
    writer.add(np.arange(3), random_vectors(3))
    queries = random_vectors(2, seed=1)
    before = writer.search(queries, 3)

    def power_cut(*args, **kwargs):
        raise OSError("simulated crash while replacing the manifest")

    monkeypatch.setattr(os, "replace", power_cut)
    with pytest.raises(OSError, match="simulated crash"):
        writer.add(np.arange(10, 20), random_vectors(10, seed=2))
    monkeypatch.undo()

    orphans = segment_files(root) - referenced_files(writer)
    assert orphans, "the segment was written before the manifest"
    assert not list(root.glob(".manifest.json.*"))
    for index in (writer, ShardedIndex(root, DIM, "l2", segment_size=4)):
        assert index.version == 1 and index.ntotal == 3
        np.testing.assert_array_equal(index.search(queries, 3)[1], before[1])

    assert writer.add(np.arange(10, 20), random_vectors(10, seed=2)) == 10
    assert writer.ntotal == 13 and writer.version == 3  # the delta, then its merge
    assert not orphans & segment_files(root)


def test_writer_killed_between_segment_and_manifest_leaves_a_valid_index(tmp_path):
    """A process killed after writing a segment but before the manifest changes nothing visible."""
    root = tmp_path / "idx"
    first = ShardedIndex(root, DIM, "cosine", segment_size=4)
    first.add(np.arange(5), random_vectors(5))
    script = textwrap.dedent(
        f"""
        import os
        import numpy as np
        import mammosearch.index.sharded as sharded
        import mammosearch.index.writer as writer
        writer.write_manifest = lambda *args, **kwargs: os._exit(9)
        index = sharded.ShardedIndex({str(root)!r}, {DIM}, "cosine", segment_size=4)
        index.add(np.arange(100, 103), np.ones((3, {DIM}), dtype=np.float32))
        """
    )
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    killed = subprocess.run([sys.executable, "-c", script], env=environment, timeout=60)
    assert killed.returncode == 9

    survivor = ShardedIndex(root, DIM, "cosine", segment_size=4)
    assert survivor.version == first.version and survivor.ntotal == 5
    orphans = segment_files(root) - referenced_files(survivor)
    assert orphans
    assert survivor.search(random_vectors(1), 5)[1].min() >= 0

    assert survivor.add(np.arange(100, 103), random_vectors(3, seed=3)) == 3
    assert not orphans & segment_files(root)
    assert survivor.verify() == []


def test_retired_segments_outlive_one_write_for_slow_readers(tmp_path):
    """Files a write retires stay on disk until the following write, then are collected."""
    root = tmp_path / "idx"
    writer = ShardedIndex(root, DIM, "l2", segment_size=100)
    writer.add(np.arange(4), random_vectors(4))
    first_delta = segment_files(root)
    writer.add(np.arange(4, 12), random_vectors(8, seed=1))  # absorbs the first delta
    assert first_delta <= set(writer._reader.view.manifest["retired"])
    assert first_delta <= segment_files(root)
    writer.remove([0])
    assert not first_delta & segment_files(root)
    assert writer.collect_garbage(include_retired=True) == []
    assert segment_files(root) == referenced_files(writer)


def test_concurrent_writers_take_turns_through_the_writer_lock(tmp_path):
    """Two writer objects appending at once (flock on .writer.lock) lose no vectors."""
    root = tmp_path / "idx"
    writers = [ShardedIndex(root, DIM, "l2", segment_size=16) for _ in range(2)]

    def append_all(writer: ShardedIndex, first_id: int) -> None:
        for batch in range(10):
            start = first_id + batch * 3
            writer.add(np.arange(start, start + 3), random_vectors(3, seed=start))

    threads = [
        threading.Thread(target=append_all, args=(writer, first_id))
        for writer, first_id in zip(writers, (0, 1000), strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    reopened = ShardedIndex(root, DIM, "l2", segment_size=16)
    # 20 appends, and the merges of their deltas into the main index
    assert reopened.ntotal == 60 and reopened.version >= 20
    expected = np.concatenate([np.arange(30), np.arange(1000, 1030)])
    np.testing.assert_array_equal(reopened.ids(), expected)
    assert reopened.verify() == []


def test_reader_retries_when_a_segment_vanishes_between_manifest_and_load(tmp_path, monkeypatch):
    """A reader that read a manifest just before a writer collected its files re-reads it."""
    root = tmp_path / "idx"
    writer = ShardedIndex(root, DIM, "l2", segment_size=100)
    writer.add(np.arange(2), random_vectors(2))
    stale_manifest = dict(writer._reader.view.manifest)
    for batch in range(3):  # each absorbs the previous delta; two writes later it is deleted
        writer.add(np.arange(10 * (batch + 1), 10 * (batch + 1) + 4), random_vectors(4, batch))
    assert not {e["file"] for e in stale_manifest["segments"]} & segment_files(root)

    real_read_manifest = reader_module.read_manifest
    answers = iter([stale_manifest])
    monkeypatch.setattr(
        reader_module, "read_manifest", lambda path: next(answers, None) or real_read_manifest(path)
    )
    reader = ShardedIndex(root, DIM, "l2", segment_size=100)
    assert reader.version == writer.version and reader.ntotal == 14
