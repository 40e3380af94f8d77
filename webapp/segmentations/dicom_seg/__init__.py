"""DICOM SEG reading and writing on a series' voxel grid, without Django.

The in-memory form of a segmentation is a :class:`Labelmap`: one or more *layers*, each an array
``[k, j, i]`` on the source :class:`~webapp.studies.volume.Volume`'s grid whose values are segment numbers
(0 = background). Segments that never overlap share a layer; a segment that overlaps another goes to another
layer, so overlapping segments of a SEG stay separate segments. :class:`SegmentInfo` carries what DICOM SEG
says about each segment.

- ``reader.read_seg(dataset, volume)`` places any SEG onto its source volume (``docs/segmentations.md``).
- ``writer.write_seg(labelmap, volume, source_datasets, ...)`` encodes a labelmap with highdicom.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class SegError(Exception):
    """A SEG that cannot be read, placed on its source volume, or written; the message says why."""


class NotASegError(SegError):
    pass


class SourceMismatchError(SegError):
    """The SEG does not refer to the given volume (another series, frame of reference or grid)."""


class MissingGeometryError(SegError):
    """The SEG lacks what is needed to place its frames (plane positions or orientation)."""


class UnsupportedSegError(SegError):
    """A valid SEG of a kind Annovox does not read: slide microscopy (tiled frames on a slide), pixel data
    that no installed decoder handles, or a real segment numbered 0."""


@dataclass(frozen=True)
class Code:
    """A coded concept, as in DICOM's Code Sequence: e.g. ``Code("10200004", "SCT", "Liver")``."""

    value: str
    scheme: str
    meaning: str


# Defaults where the annotator chose nothing: SNOMED CT "Tissue" / "Tissue".
TISSUE = Code("85756007", "SCT", "Tissue")


@dataclass
class SegmentInfo:
    number: int  # SegmentNumber, from 1
    label: str
    color: str = "#e6194b"  # display colour, "#rrggbb" (RecommendedDisplayCIELabValue in the SEG)
    category: Code = TISSUE  # SegmentedPropertyCategoryCodeSequence
    type: Code = TISSUE  # SegmentedPropertyTypeCodeSequence
    tracking_id: str = ""
    tracking_uid: str = ""
    algorithm_type: str = "MANUAL"  # MANUAL | SEMIAUTOMATIC | AUTOMATIC
    algorithm_name: str = ""  # required unless MANUAL
    algorithm_version: str = ""
    description: str = ""


@dataclass
class Labelmap:
    """Segments on a volume's grid: ``layers[n, k, j, i]`` holds segment numbers (uint8; uint16 past 255)."""

    layers: np.ndarray
    segments: list[SegmentInfo] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.layers.ndim != 4:
            raise ValueError(f"layers must be [layer, k, j, i], not shape {self.layers.shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """(k, j, i) of the grid."""
        return tuple(self.layers.shape[1:])  # type: ignore[return-value]

    def segment(self, number: int) -> SegmentInfo:
        for info in self.segments:
            if info.number == number:
                return info
        raise KeyError(number)

    def mask(self, number: int) -> np.ndarray:
        """Boolean [k, j, i] mask of one segment."""
        return (self.layers == number).any(axis=0)


def pack_layers(masks: dict[int, np.ndarray], into: np.ndarray | None = None) -> np.ndarray:
    """Put boolean [k, j, i] masks, keyed by segment number, into as few layers as overlaps allow
    (first fit, in segment-number order). ``into``: layers ``[n, k, j, i]`` that already hold other
    segments; the masks go into them first, then into new layers (``into`` itself is not changed)."""
    if not masks and into is None:
        raise ValueError("no segments")
    shape = next(iter(masks.values())).shape if into is None else into.shape[1:]
    largest = max([*masks, int(into.max()) if into is not None and into.size else 0])
    dtype = np.uint8 if largest <= 255 else np.uint16
    layers: list[np.ndarray] = [] if into is None else [layer.astype(dtype) for layer in into]
    for number in sorted(masks):
        mask = masks[number]
        for layer in layers:
            if not (layer[mask] != 0).any():
                layer[mask] = number
                break
        else:
            layer = np.zeros(shape, dtype=dtype)
            layer[mask] = number
            layers.append(layer)
    return np.stack(layers)
