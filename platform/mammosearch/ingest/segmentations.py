"""Hand-drawn regions (VGG Image Annotator CSV export) -> Segmentation rows.

Columns: `#filename, file_size, file_attributes, region_count, region_id,
region_shape_attributes, region_attributes`; the last two hold JSON. An image without
regions appears once with `{}` as its shape and is skipped.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mammosearch.db.models import Segmentation


@dataclass(frozen=True)
class Region:
    image_name: str  # file stem, stripped: "P2_R_CM_CC"
    region_index: int
    shape: dict[str, Any]
    attributes: dict[str, Any]


@dataclass
class SegmentationCounts:
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    problems: list[str] = field(default_factory=list)  # "file.csv line 7: reason"
    without_image: list[str] = field(default_factory=list)  # image names not registered

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def find_segmentation_csv(folder: Path) -> Path | None:
    """`Radiology_hand_drawn_segmentations*.csv` (any version suffix), newest name last wins."""
    candidates = sorted(p for p in folder.rglob("*.csv") if "segmentation" in p.name.lower())
    return candidates[-1] if candidates else None


def _json_cell(text: str | None, column: str, where: str) -> dict[str, Any]:
    if text is None or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: {column} is not valid JSON ({exc.msg})") from exc
    if not isinstance(value, dict):
        raise ValueError(f"{where}: {column} is not a JSON object")
    return value


def parse_segmentation_csv(path: Path) -> tuple[list[Region], list[str]]:
    """The regions of the CSV plus the problems of lines that could not be read."""
    regions: list[Region] = []
    problems: list[str] = []
    seen: set[tuple[str, int]] = set()
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        headers = {
            (header or "").strip().lstrip("#").strip().lower(): header
            for header in reader.fieldnames or []
        }
        missing = {"filename", "region_shape_attributes"} - headers.keys()
        if missing:
            return [], [f"{path.name}: missing column(s) {', '.join(sorted(missing))}"]
        for record in reader:
            where = f"{path.name} line {reader.line_num}"
            try:
                shape = _json_cell(
                    record.get(headers["region_shape_attributes"]), "region_shape_attributes", where
                )
                attributes = _json_cell(
                    record.get(headers.get("region_attributes", "")), "region_attributes", where
                )
            except ValueError as exc:
                problems.append(str(exc))
                continue
            region_id = (record.get(headers.get("region_id", "")) or "").strip() or "0"
            if not region_id.isdigit():
                problems.append(f"{where}: region_id {region_id!r} is not a number")
                continue
            region_index = int(region_id)
            if not shape:
                continue  # an image listed without any region
            image_name = Path((record.get(headers["filename"]) or "").strip()).stem.strip()
            if not image_name:
                problems.append(f"{where}: no filename")
                continue
            if (image_name, region_index) in seen:
                problems.append(f"{where}: {image_name} region {region_index} repeated; skipped")
                continue
            seen.add((image_name, region_index))
            regions.append(Region(image_name, region_index, shape, attributes))
    return regions, problems


def import_segmentations(
    session: Session, regions: list[Region], image_ids: dict[str, int]
) -> SegmentationCounts:
    """Upsert regions of images registered under `image_ids` (name -> id); others are listed."""
    counts = SegmentationCounts()
    ids_by_key = {name.upper(): image_id for name, image_id in image_ids.items()}
    for region in regions:
        image_id = ids_by_key.get(region.image_name.upper())
        if image_id is None:
            if region.image_name not in counts.without_image:
                counts.without_image.append(region.image_name)
            continue
        existing = session.scalars(
            select(Segmentation).where(
                Segmentation.image_id == image_id,
                Segmentation.region_index == region.region_index,
            )
        ).first()
        if existing is None:
            session.add(
                Segmentation(
                    image_id=image_id,
                    region_index=region.region_index,
                    shape=region.shape,
                    attributes=region.attributes,
                )
            )
            counts.new += 1
        elif existing.shape == region.shape and existing.attributes == region.attributes:
            counts.unchanged += 1
        else:
            existing.shape, existing.attributes = region.shape, region.attributes
            counts.updated += 1
    session.flush()
    return counts
