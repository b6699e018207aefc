"""Finding a backbone's weights file (explicit, package, torch cache, download) and its sha256."""

from __future__ import annotations

import hashlib
import json
import socket
import urllib.request
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from mammosearch.durable.atomic_files import SHARED, atomic_write_text, atomic_writer

if TYPE_CHECKING:
    from mammosearch.embed.backbones import Backbone

WEIGHTS_SETTING = "MAMMOSEARCH_WEIGHTS"
RANDOM_SETTING = "MAMMOSEARCH_ALLOW_RANDOM_WEIGHTS"
CONNECT_TIMEOUT_S = 3.0
DOWNLOAD_TIMEOUT_S = 30.0
_HASH_CHUNK_BYTES = 1 << 20


class WeightsUnavailable(RuntimeError):
    """No usable weights file for a backbone; the message says where to put one.

    `summary` is the same fact in one line, for places that only need to say that a backbone
    was passed over (`auto`'s choice, a report's skipped comparison backbone).
    """

    def __init__(self, message: str, summary: str | None = None) -> None:
        super().__init__(message)
        self.summary = summary or message


@dataclass(frozen=True)
class ResolvedWeights:
    path: Path
    source: str  # how it was found, e.g. "torch hub cache"


def checkpoint_dir() -> Path:
    """Where torchvision keeps downloaded weights: $TORCH_HOME/hub/checkpoints."""
    import torch  # here, not at the top: hashing a weights file needs no torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_weights(
    backbone: Backbone, explicit: Path | None = None, download: bool = True
) -> ResolvedWeights:
    """Explicit file, else the packaged file, else the torch cache, else a download."""
    if explicit is not None:
        explicit = Path(explicit).expanduser()
        if not explicit.is_file():
            raise WeightsUnavailable(
                f"{explicit}: weights file for {backbone.name} not found "
                f"(given explicitly, e.g. by {WEIGHTS_SETTING})"
            )
        return ResolvedWeights(explicit.resolve(), "explicit file")
    packaged = backbone.packaged_weights()
    if packaged is not None and packaged.is_file():
        return ResolvedWeights(packaged, "installed package")
    cached = checkpoint_dir() / backbone.weights_file
    if cached.is_file():
        return ResolvedWeights(cached, "torch hub cache")
    download_error = "no download URL" if backbone.weights_url is None else "download disabled"
    if download and backbone.weights_url is not None:
        try:
            return ResolvedWeights(_download(backbone.weights_url, cached), "downloaded")
        except OSError as error:
            download_error = f"download from {backbone.weights_url} failed: {error}"
    raise WeightsUnavailable(
        f"{backbone.name}: ImageNet weights not found. Put {backbone.weights_file} into "
        f"{cached.parent} (torchvision's cache, from $TORCH_HOME), or set {WEIGHTS_SETTING} "
        f"to the file's path ({download_error}). Random, untrained weights are used only when "
        f"allowed explicitly ({RANDOM_SETTING}=1).",
        summary=f"{backbone.name}: no ImageNet weights ({backbone.weights_file} not in "
        f"{cached.parent})",
    )


@lru_cache(maxsize=16)
def _reachable(host: str, port: int) -> str | None:
    """None when a TCP connection opens, else why not; asked once per process."""
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        return str(error)
    return None


def _download(url: str, destination: Path) -> Path:
    """Fetch `url` to `destination` atomically, checking torchvision's hash prefix in the name."""
    parsed = urlparse(url)
    unreachable = _reachable(parsed.hostname or "", parsed.port or 443)
    if unreachable is not None:
        raise OSError(f"{parsed.hostname} unreachable ({unreachable})")
    digest = hashlib.sha256()
    with (
        atomic_writer(destination, SHARED, suffix=".partial") as partial,
        urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response,
    ):
        while chunk := response.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
            partial.write(chunk)  # type: ignore[attr-defined]
        sha256 = digest.hexdigest()
        expected_prefix = destination.stem.rsplit("-", 1)[-1]
        if not sha256.startswith(expected_prefix):  # raised inside: the partial file goes
            raise OSError(f"{url}: sha256 {sha256} does not start with {expected_prefix}")
    _write_sidecar(destination, sha256)
    return destination


_sha256_by_file: dict[tuple[str, int, int], str] = {}


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256.json")


def _file_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


def _write_sidecar(path: Path, sha256: str) -> None:
    """Remember the hash next to the file; a read-only folder just means hashing again."""
    key = _file_key(path)
    _sha256_by_file[key] = sha256
    record = {"size": key[1], "mtime_ns": key[2], "sha256": sha256}
    try:
        atomic_write_text(_sidecar(path), json.dumps(record), SHARED)
    except OSError:
        pass


def file_sha256(path: Path) -> str:
    """sha256 of a weights file, cached in memory and in `<file>.sha256.json` beside it."""
    key = _file_key(path)
    if key in _sha256_by_file:
        return _sha256_by_file[key]
    try:
        record = json.loads(_sidecar(path).read_text())
        if (record["size"], record["mtime_ns"]) == key[1:]:
            sha256: str = record["sha256"]
            _sha256_by_file[key] = sha256
            return sha256
    except (OSError, ValueError, KeyError, TypeError):
        pass
    digest = hashlib.sha256()
    with path.open("rb") as weights:
        while chunk := weights.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    _write_sidecar(path, digest.hexdigest())
    return digest.hexdigest()
