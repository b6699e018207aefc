"""Keeping an index directory sound: verify its files, drop damage, collect leftovers.

A damaged segment is quarantined and dropped from the view, and from the manifest under the
writer lock, so no reader keeps serving it. Its vectors come back from the database, the
truth (pipeline.verify_index); until then the index holds fewer vectors than the database
lists, which search refuses to pass off as an answer (mammosearch.pipeline.index_health).
"""

from __future__ import annotations

from mammosearch.index.manifest import IndexCorruptError, read_manifest
from mammosearch.index.reader import Reader
from mammosearch.index.segment_store import SegmentStore
from mammosearch.index.writer import Writer


class Housekeeping:
    """Verify, repair and garbage collection of one index directory, under its writer lock."""

    def __init__(self, store: SegmentStore, reader: Reader, writer: Writer) -> None:
        self.store = store
        self.reader = reader
        self.writer = writer

    def verify(self) -> list[str]:
        """Check every segment file the manifest names against its size and sha256; [] when
        sound.

        A loaded segment can be damaged on disk afterwards (a memory-mapped file changed in
        place changes what is served): each file touched since its last matching hash is
        hashed again (SegmentStore.problem), and one that is missing or differs is
        quarantined and dropped from the view and the manifest (drop_damaged).
        """
        with self.reader.lock:
            try:
                manifest = read_manifest(self.reader.options.manifest_path)
            except IndexCorruptError as error:
                return [str(error)]
            if manifest is None:
                return []
            problems = [
                problem
                for entry in manifest["segments"]
                if (problem := self.store.verify(entry)) is not None
            ]
            if problems:
                self.reader.reload_if_changed(force=True)
                self.drop_damaged()
            return problems

    def drop_damaged(self) -> bool:
        """Publish a manifest without the segments this view could not serve (their files
        are missing or quarantined); True when one was written."""
        with self.writer.writing():
            view = self.reader.view
            if not view.damage:
                return False
            self.writer.commit(view, view.entries(), new_segments=[], retired=[])
            return True

    def collect_garbage(self, include_retired: bool = False) -> list[str]:
        """Delete files no manifest names; `include_retired` also those the last write retired."""
        with self.writer.writing():
            manifest = self.reader.view.manifest
            if manifest is None:
                return []
            return self.store.collect_garbage(manifest, include_retired)

    def stray_files(self) -> list[str]:
        """Files no manifest accounts for (an interrupted write's segments, temp manifests)."""
        with self.writer.writing():
            return self.store.strays(self.reader.view.manifest)

    def discard_strays(self) -> list[str]:
        """Delete stray_files(); safe at any time, since it holds the writer lock."""
        with self.writer.writing():
            return self.store.discard_strays(self.reader.view.manifest)
