"""The CPU's vector extensions, read at run time: the machine changes under the product."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

REPORTED = (
    "avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8",
)  # fmt: skip
INT8_DOT_PRODUCT = ("avx512_vnni", "avx_vnni", "amx_int8")
BF16 = ("avx512_bf16", "amx_bf16")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The `flags` line of /proc/cpuinfo; empty where it cannot be read (not Linux)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return frozenset()
    for line in lines:
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The `model name` line of /proc/cpuinfo ("unknown" where it cannot be read)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "unknown"
    for line in lines:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def vector_extensions() -> str:
    """The extensions that matter for FAISS and int8/bf16 inference, as one line."""
    found = [flag for flag in REPORTED if flag in cpu_flags()]
    return " ".join(found) or "none of " + ", ".join(REPORTED)


def has_int8_dot_product() -> bool:
    """VNNI/AMX: u8 x s8 products without the 16-bit saturation older AVX2 code paths risk."""
    return any(flag in cpu_flags() for flag in INT8_DOT_PRODUCT)


def has_bf16() -> bool:
    """AVX512_BF16/AMX: bfloat16 matrix products in hardware rather than emulated."""
    return any(flag in cpu_flags() for flag in BF16)
