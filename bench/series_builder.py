"""Build a clinical-size CT series (default 512×512×300) from the 20 shared TotalSegmentator slices.

The shared data has no large series, so the benchmark makes one with correct geometry: the source slices are
sorted along their slice normal and repeated back and forth (0…19, 18…1, 0…) so that neighbouring slices stay
neighbours; every output slice gets new Study/Series/SOP Instance and Frame of Reference UIDs, an Image
Position (Patient) that steps along the normal by the source slice spacing, the matching Slice Location and
an Instance Number. The result is a valid, evenly spaced volume of ``slices`` slices that a series → volume
builder, a viewer or a PACS accepts as one series.

Usage: ``python bench/series_builder.py OUT_DIR [--slices 300]``
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID, generate_uid
from pydicom.valuerep import format_number_as_ds

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT.parent / "shared" / "data" / "ct_totalseg" / "dicom_raw_uidfixed"
PATIENT_NAME = "Annovox^Bench"
PATIENT_ID = "ANNOVOX_BENCH"


@dataclass
class BuiltSeries:
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    sop_uids: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    spacing: float = 0.0
    total_bytes: int = 0


def slice_normal(ds: Dataset) -> np.ndarray:
    orientation = np.asarray(ds.ImageOrientationPatient, dtype=float)
    return np.cross(orientation[:3], orientation[3:])


def load_sorted_slices(source: Path = SOURCE) -> list[Dataset]:
    """The source slices in order along the slice normal, checked for one orientation and even spacing."""
    slices = [pydicom.dcmread(path) for path in sorted(source.iterdir()) if path.is_file()]
    if len(slices) < 2:
        raise ValueError(f"{source} holds fewer than two slices")
    normal = slice_normal(slices[0])
    for ds in slices:
        if not np.allclose(slice_normal(ds), normal, atol=1e-4):
            raise ValueError(f"{source} mixes slice orientations")
    return sorted(slices, key=lambda ds: float(np.dot(normal, np.asarray(ds.ImagePositionPatient, float))))


def ping_pong(count: int, length: int) -> list[int]:
    """0, 1, …, length-1, length-2, …, 1, 0, 1, … (count indices)."""
    period = 2 * (length - 1)
    return [i % period if i % period < length else period - i % period for i in range(count)]


def build_series(
    out_dir: Path,
    *,
    slices: int = 300,
    source: Path = SOURCE,
    seed: str | None = None,
    series_number: int = 1,
    description: str = "Annovox benchmark volume",
    accession_number: str = "BENCH",
) -> BuiltSeries:
    """Write a ``slices``-slice series into ``out_dir`` (created) and describe it.

    ``seed`` makes the UIDs reproducible; without it every build gets fresh UIDs.
    """
    sources = load_sorted_slices(source)
    normal = slice_normal(sources[0])
    positions = [np.asarray(ds.ImagePositionPatient, float) for ds in sources]
    steps = np.diff([float(np.dot(normal, p)) for p in positions])
    if not np.allclose(steps, steps[0], atol=1e-3) or steps[0] <= 0:
        raise ValueError(f"the source slices are not evenly spaced: steps {sorted(set(steps.round(3)))}")
    spacing = float(steps[0])
    origin = positions[0]

    def uid(*parts: object) -> UID:
        return generate_uid(entropy_srcs=[seed, *map(str, parts)] if seed else None)

    built = BuiltSeries(
        study_uid=uid("study"),
        series_uid=uid("series"),
        frame_of_reference_uid=uid("frame of reference"),
        spacing=spacing,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    for index, source_index in enumerate(ping_pong(slices, len(sources))):
        ds = sources[source_index]  # reused: everything that differs per slice is set below
        position = origin + index * spacing * normal
        sop_uid = uid("instance", index)
        ds.PatientName = PATIENT_NAME
        ds.PatientID = PATIENT_ID
        ds.StudyInstanceUID = built.study_uid
        ds.SeriesInstanceUID = built.series_uid
        ds.FrameOfReferenceUID = built.frame_of_reference_uid
        ds.SOPInstanceUID = sop_uid
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.StudyDescription = f"{description} {ds.Rows}x{ds.Columns}x{slices}"
        ds.SeriesDescription = f"{description} series {series_number}"
        ds.SeriesNumber = series_number
        ds.AccessionNumber = accession_number
        ds.StudyID = accession_number[:16]
        ds.InstanceNumber = index + 1
        ds.ImagePositionPatient = [format_number_as_ds(float(v)) for v in position]
        ds.SliceLocation = format_number_as_ds(float(np.dot(normal, position)))
        for keyword in ("DataCollectionCenterPatient", "ReconstructionTargetCenterPatient"):
            if keyword in ds:  # the scanner writes the slice's own centre here
                centre = list(ds[keyword].value)
                centre[2] = float(position[2])
                setattr(ds, keyword, centre)
        path = out_dir / f"slice_{index:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        built.sop_uids.append(sop_uid)
        built.files.append(path)
        built.total_bytes += path.stat().st_size
    return built


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--seed", default=None, help="make the UIDs reproducible")
    args = parser.parse_args()
    built = build_series(args.out_dir, slices=args.slices, seed=args.seed)
    print(
        f"{len(built.files)} slices, {built.spacing:g} mm apart, {built.total_bytes / 1e6:.1f} MB in "
        f"{args.out_dir}\nStudy {built.study_uid}\nSeries {built.series_uid}"
    )


if __name__ == "__main__":
    main()
