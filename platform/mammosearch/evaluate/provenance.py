"""What produced a report: software versions and the git commit, so reports can be compared."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

DISTRIBUTIONS = {
    "torch": "torch",
    "torchvision": "torchvision",
    "faiss": "faiss-cpu",
    "numpy": "numpy",
    "sklearn": "scikit-learn",
    "matplotlib": "matplotlib",
    "mammosearch": "mammosearch",
}


def _version(distribution: str, module: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        pass
    try:
        return str(getattr(__import__(module), "__version__", None) or "") or None
    except ImportError:
        return None


def git_commit(start: Path | None = None) -> str | None:
    """HEAD of the checkout this package runs from (with '-dirty' if it has changes), if any."""
    where = start or Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5
        )
        if head.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where, capture_output=True, text=True, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    dirty = status.returncode == 0 and bool(status.stdout.strip())
    return head.stdout.strip() + ("-dirty" if dirty else "")


def software_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name, distribution in DISTRIBUTIONS.items():
        versions[name] = _version(distribution, name)
    versions["git_commit"] = git_commit()
    return versions
