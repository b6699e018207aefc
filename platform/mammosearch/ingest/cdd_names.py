"""The CDD-CESM image-name grammar, once: `P<patient>_<side>_<kind>_<view>`, e.g. P12_L_CM_CC.

Side L or R; kind CM (contrast-enhanced, subtracted) or DM (low energy); view CC, MLO or
another code. The sheet and the watch folder both read names through `parse_cdd_name`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PATIENT = re.compile(r"^\s*P\s*0*(?P<patient>\d+)", re.IGNORECASE)
_PARTS = re.compile(r"_(?P<side>[LR])_(?P<kind>CM|DM)_(?P<view>[A-Z]+)(?![A-Z])", re.IGNORECASE)
MODALITY_OF_KIND = {"CM": "subtracted", "DM": "low-energy"}


@dataclass(frozen=True)
class CddName:
    patient_number: str  # the digits, without leading zeros
    side: str | None
    kind: str | None  # CM or DM
    view: str | None

    @property
    def patient(self) -> str:
        return f"P{int(self.patient_number)}"

    @property
    def modality(self) -> str | None:
        return MODALITY_OF_KIND.get(self.kind or "")


def parse_cdd_name(name: str) -> CddName | None:
    """The parts of an image name (or a file name's stem); None when it names no patient."""
    patient = _PATIENT.match(name)
    if patient is None:
        return None
    parts = _PARTS.match(name, patient.end())
    if parts is None:
        return CddName(str(int(patient["patient"])), None, None, None)
    return CddName(
        str(int(patient["patient"])),
        parts["side"].upper(),
        parts["kind"].upper(),
        parts["view"].upper(),
    )
