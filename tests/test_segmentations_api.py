"""Segmentations as versioned DICOM SEG through the REST API: create, save versions from labelmaps, fetch
them back as labelmaps, SEG files and NIfTI, restore, load SEGs already in the study database, refuse bad
input without changing anything, and resume unsaved work (the latest version with the drafts made since).
Real files from ../shared/data, the real database and storage."""

import gzip
import io
import json
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from tests.conftest import study_reader
from tests.test_dicomweb import body_of
from webapp.interactive.protocol import MaskFrame, encode_frame
from webapp.segmentations import services, versions
from webapp.segmentations.models import (
    Draft,
    InteractiveSession,
    PromptEvent,
    Segment,
    Segmentation,
    SegmentationVersion,
)
from webapp.studies.importing import import_sources, iter_path_sources
from webapp.studies.models import Instance, Series

pytestmark = pytest.mark.django_db

CT_RAW = "ct_totalseg/dicom_raw_uidfixed"
CT_LABELS = "ct_totalseg/nifti/example_seg_dicom_dicomorder.nii.gz"
CLASSMAP = "ct_totalseg/totalseg_classmap.json"
DCMQI = "dicom_seg_thirdparty/dcmqi/segmentations"
# Four organs of the 20 CT slices: segment number -> (label, TotalSegmentator number).
ORGANS = {1: "spleen", 2: "liver", 3: "stomach", 4: "pancreas"}
TOTALSEG = {1: 1, 2: 5, 3: 6, 4: 7}


@pytest.fixture
def user():
    user = study_reader("annotator", password="a long test password")
    user.first_name, user.last_name = "Ada", "Lovelace"
    user.save()
    return user


@pytest.fixture
def client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def import_folder(path: Path) -> Series:
    outcomes = import_sources(iter_path_sources([path]))
    assert {o.status for o in outcomes} == {"stored"}, [o.reason for o in outcomes]
    return Series.objects.get(series_instance_uid=outcomes[0].series_instance_uid)


@pytest.fixture
def ct(shared_data) -> Series:
    return import_folder(shared_data / CT_RAW)


@pytest.fixture
def organs(shared_data) -> np.ndarray:
    """[1, k, j, i] labelmap of the four organs, from the reference labels in DICOM order."""
    labels = np.asarray(nib.load(shared_data / CT_LABELS).dataobj).transpose(2, 1, 0)
    organs = np.zeros(labels.shape, np.uint8)
    for number, totalseg in TOTALSEG.items():
        organs[labels == totalseg] = number
    return organs[np.newaxis]


def stored_files(storage: Path) -> list[Path]:
    return sorted(p for p in storage.rglob("*") if p.is_file())


def npy_upload(layers: np.ndarray, name: str = "labelmap.npy.gz") -> SimpleUploadedFile:
    buffer = io.BytesIO()
    np.save(buffer, layers)
    return SimpleUploadedFile(name, gzip.compress(buffer.getvalue()), content_type="application/gzip")


def labelmap_of(response) -> np.ndarray:
    assert response.status_code == 200, response.content[:500]
    return np.load(io.BytesIO(gzip.decompress(response.content)))


def create(client: Client, series: Series, **body) -> dict:
    response = client.post(
        f"/api/series/{series.series_instance_uid}/segmentations/", body, content_type="application/json"
    )
    assert response.status_code == 201, response.content
    return response.json()


def organ_segmentation(client: Client, series: Series) -> dict:
    segments = [
        {
            "label": name,
            "color": "#ff0000",
            "category": {"value": "123037004", "scheme": "SCT", "meaning": "Anatomical Structure"},
            "type": {"value": f"T{number}", "scheme": "99TEST", "meaning": name},
        }
        for number, name in ORGANS.items()
    ]
    return create(client, series, label="Abdomen organs", description="four organs", segments=segments)


def save(client: Client, segmentation_id: int, layers: np.ndarray, **fields):
    return client.post(
        f"/api/segmentations/{segmentation_id}/versions/", {"labelmap": npy_upload(layers), **fields}
    )


def test_save_versions_fetch_restore_and_find_them_over_dicomweb(client, ct, organs):
    segmentation = organ_segmentation(client, ct)
    assert [s["number"] for s in segmentation["segments"]] == [1, 2, 3, 4]
    assert segmentation["latest_version"] is None

    first = save(client, segmentation["id"], organs, description="first pass", parent=0)
    assert first.status_code == 201, first.content
    v1 = first.json()
    assert v1["number"] == 1 and v1["parent"] is None and v1["layer_count"] == 1
    assert v1["created_by"]["username"] == "annotator"
    counts = {str(n): int((organs == n).sum()) for n in ORGANS}
    assert v1["changed_voxels"] == counts
    assert {s["number"]: s["voxels"] for s in v1["segments"]} == {n: int((organs == n).sum()) for n in ORGANS}

    url = f"/api/segmentations/{segmentation['id']}/versions"
    assert np.array_equal(labelmap_of(client.get(f"{url}/1/labelmap/")), organs)

    # An edit: the pancreas loses a slab, the stomach grows into background.
    edited = organs.copy()
    pancreas_slab = (edited[0, :5] == 4).sum()
    edited[0, :5][edited[0, :5] == 4] = 0
    grown = (edited[0, 10, 100:110, 100:110] == 0).sum()
    edited[0, 10, 100:110, 100:110][edited[0, 10, 100:110, 100:110] == 0] = 3
    second = save(client, segmentation["id"], edited, description="fix pancreas", parent=1)
    assert second.status_code == 201, second.content
    assert second.json()["parent"] == 1
    assert second.json()["changed_voxels"] == {"3": int(grown), "4": int(pancreas_slab)}

    # Version 1 is untouched; both are separate SEG instances in one SEG series of the study.
    assert np.array_equal(labelmap_of(client.get(f"{url}/1/labelmap/")), organs)
    assert np.array_equal(labelmap_of(client.get(f"{url}/2/labelmap/")), edited)
    restored = client.post(f"{url}/1/restore/")
    assert restored.status_code == 201, restored.content
    assert restored.json()["number"] == 3 and restored.json()["restored_from"] == 1
    assert np.array_equal(labelmap_of(client.get(f"{url}/3/labelmap/")), organs)

    listed = client.get(f"{url}/").json()
    assert [v["number"] for v in listed] == [3, 2, 1]
    seg_series = {v["seg_series_instance_uid"] for v in listed}
    assert seg_series == {segmentation["seg_series_instance_uid"]}

    study_uid = ct.study.study_instance_uid
    qido = client.get(f"/dicomweb/studies/{study_uid}/series", {"Modality": "SEG"})
    assert qido.status_code == 200
    assert [s["0020000E"]["Value"][0] for s in qido.json()] == list(seg_series)
    instances = client.get(f"/dicomweb/studies/{study_uid}/series/{seg_series.pop()}/instances").json()
    assert sorted(i["00200013"]["Value"][0] for i in instances) == [1, 2, 3]

    # The SEG file: our metadata, the source references, and the same bytes as WADO serves.
    seg_file = client.get(f"{url}/2/seg/")
    assert seg_file.status_code == 200 and seg_file["Content-Type"] == "application/dicom"
    ds = pydicom.dcmread(io.BytesIO(seg_file.content))
    assert ds.Modality == "SEG" and ds.InstanceNumber == 2
    assert ds.ContentLabel == "ABDOMEN ORGANS" and str(ds.ContentCreatorName) == "Lovelace^Ada"
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == ct.series_instance_uid
    assert {s.SegmentNumber: s.SegmentLabel for s in ds.SegmentSequence} == ORGANS
    assert {s.SegmentAlgorithmType for s in ds.SegmentSequence} == {"MANUAL"}
    liver = next(s for s in ds.SegmentSequence if s.SegmentNumber == 2)
    assert liver.SegmentedPropertyTypeCodeSequence[0].CodeValue == "T2"
    assert liver.SegmentedPropertyCategoryCodeSequence[0].CodeMeaning == "Anatomical Structure"
    wado = client.get(
        f"/dicomweb/studies/{study_uid}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}",
        HTTP_ACCEPT='multipart/related; type="application/dicom"',
    )
    assert wado.status_code == 200 and seg_file.content in body_of(wado)


def test_nifti_export_has_the_labels_on_the_series_geometry(client, ct, organs, shared_data):
    segmentation = organ_segmentation(client, ct)
    assert save(client, segmentation["id"], organs).status_code == 201
    response = client.get(f"/api/segmentations/{segmentation['id']}/versions/1/nifti/")
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert sorted(archive.namelist()) == ["labelmap.nii.gz", "labels.json"]
        image = nib.Nifti1Image.from_bytes(gzip.decompress(archive.read("labelmap.nii.gz")))
        labels = json.loads(archive.read("labels.json"))
    # Same voxels and same geometry as the reference NIfTI of this grid.
    reference = nib.load(shared_data / CT_LABELS)
    assert np.allclose(image.affine, reference.affine, atol=1e-3)
    assert np.array_equal(np.asarray(image.dataobj), organs[0].transpose(2, 1, 0))
    assert {s["number"]: s["label"] for s in labels["segments"]} == ORGANS
    assert {s["file"] for s in labels["segments"]} == {"labelmap.nii.gz"}


def test_overlapping_segments_are_kept_on_separate_layers(client, ct, organs):
    segmentation = organ_segmentation(client, ct)
    extra = client.post(
        f"/api/segmentations/{segmentation['id']}/segments/",
        {"label": "region of interest"},
        content_type="application/json",
    )
    assert extra.status_code == 201 and extra.json()["number"] == 5
    roi = np.zeros_like(organs)
    roi[0, 5:15, 150:350, 150:350] = 5  # overlaps liver, stomach and pancreas
    layers = np.concatenate([organs, roi])
    assert save(client, segmentation["id"], layers).status_code == 201
    url = f"/api/segmentations/{segmentation['id']}/versions/1"
    back = labelmap_of(client.get(f"{url}/labelmap/"))
    for number in [*ORGANS, 5]:
        assert np.array_equal((back == number).any(axis=0), (layers == number).any(axis=0)), number
    with zipfile.ZipFile(io.BytesIO(client.get(f"{url}/nifti/").content)) as archive:
        assert sorted(archive.namelist()) == [
            "labelmap_layer1.nii.gz",
            "labelmap_layer2.nii.gz",
            "labels.json",
        ]


def test_ai_prompts_make_a_segment_semiautomatic_with_the_model(client, ct, organs, user):
    segmentation = organ_segmentation(client, ct)
    liver = Segment.objects.get(segmentation_id=segmentation["id"], number=2)
    session = InteractiveSession.objects.create(
        segment=liver, user=user, model_name="default", model_version="2600-f907e4a"
    )
    PromptEvent.objects.create(
        session=session,
        sequence=1,
        kind="point",
        payload={"point": [250, 300, 10], "positive": True},
        user=user,
        model_name="default",
        status=PromptEvent.Status.APPLIED,
    )
    assert save(client, segmentation["id"], organs).status_code == 201
    ds = pydicom.dcmread(
        io.BytesIO(client.get(f"/api/segmentations/{segmentation['id']}/versions/1/seg/").content)
    )
    by_number = {s.SegmentNumber: s for s in ds.SegmentSequence}
    assert by_number[2].SegmentAlgorithmType == "SEMIAUTOMATIC"
    assert by_number[2].SegmentAlgorithmName == "default"
    assert by_number[1].SegmentAlgorithmType == "MANUAL"
    identification = by_number[2].SegmentationAlgorithmIdentificationSequence[0]
    assert identification.AlgorithmVersion == "2600-f907e4a"


def test_bad_labelmaps_are_refused_and_change_nothing(client, ct, organs, isolated_storage):
    segmentation = organ_segmentation(client, ct)
    assert save(client, segmentation["id"], organs).status_code == 201
    files_before = stored_files(isolated_storage)
    url = f"/api/segmentations/{segmentation['id']}/versions/"

    wrong_shape = save(client, segmentation["id"], organs[:, :10])
    assert wrong_shape.status_code == 400 and "[20, 512, 512]" in wrong_shape.json()["detail"]
    unknown = organs.copy()
    unknown[0, 0, 0, 0] = 42
    assert "not defined: [42]" in save(client, segmentation["id"], unknown).json()["detail"]
    as_float = save(client, segmentation["id"], organs.astype(np.float32))
    assert as_float.status_code == 400 and "uint8 or uint16" in as_float.json()["detail"]
    not_npy = client.post(url, {"labelmap": SimpleUploadedFile("x.npy", b"hello")})
    assert not_npy.status_code == 400 and "not a NumPy .npy file" in not_npy.json()["detail"]
    stale = save(client, segmentation["id"], organs, parent=0)
    assert stale.status_code == 409 and "version 1 was saved after version 0" in stale.json()["detail"]

    assert SegmentationVersion.objects.count() == 1
    assert stored_files(isolated_storage) == files_before


def test_a_failed_encode_or_store_leaves_the_previous_version_intact(
    client, ct, organs, user, isolated_storage, monkeypatch
):
    segmentation = organ_segmentation(client, ct)
    assert save(client, segmentation["id"], organs).status_code == 201
    files_before = stored_files(isolated_storage)
    instances_before = Instance.objects.count()

    def broken_encoder(*args, **kwargs):
        raise versions.SegError("simulated encoder failure")

    monkeypatch.setattr(versions, "write_seg", broken_encoder)
    failed = save(client, segmentation["id"], np.zeros_like(organs))
    assert failed.status_code == 422 and "simulated encoder failure" in failed.json()["detail"]
    monkeypatch.undo()

    # A crash after the SEG was stored, before its version row: both go.
    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(SegmentationVersion.objects, "create", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        versions.save_version(Segmentation.objects.get(pk=segmentation["id"]), np.zeros_like(organs), user)
    monkeypatch.undo()

    assert Instance.objects.count() == instances_before
    assert stored_files(isolated_storage) == files_before
    assert SegmentationVersion.objects.count() == 1
    assert np.array_equal(
        labelmap_of(client.get(f"/api/segmentations/{segmentation['id']}/versions/1/labelmap/")), organs
    )


def test_a_seg_in_the_study_database_loads_as_version_1(client, shared_data):
    ct3 = import_folder(shared_data / DCMQI / "ct-3slice")
    outcomes = import_sources(iter_path_sources([shared_data / DCMQI / "liver.dcm"]))
    assert outcomes[0].status == "stored"
    offered = client.get(f"/api/series/{ct3.series_instance_uid}/seg-instances/").json()
    assert [o["sop_instance_uid"] for o in offered] == [outcomes[0].sop_instance_uid]
    assert offered[0]["segmentation"] is None and offered[0]["segment_count"] == 1

    loaded = create(client, ct3, seg_instance=outcomes[0].sop_instance_uid)
    assert loaded["latest_version"] == 1 and len(loaded["segments"]) == 1
    version = client.get(f"/api/segmentations/{loaded['id']}/versions/1/").json()
    assert version["sop_instance_uid"] == outcomes[0].sop_instance_uid
    labelmap = labelmap_of(client.get(f"/api/segmentations/{loaded['id']}/versions/1/labelmap/"))
    seg = pydicom.dcmread(shared_data / DCMQI / "liver.dcm")
    # dcmqi's liver SEG: one frame per slice, each referencing its CT slice; compare slice by slice.
    assert labelmap.shape == (1, 3, 512, 512)
    assert int((labelmap == 1).sum()) == int(np.count_nonzero(seg.pixel_array))
    again = client.get(f"/api/series/{ct3.series_instance_uid}/seg-instances/").json()
    assert again[0]["segmentation"] == loaded["id"]

    # Saving on top of it makes version 2 in our own SEG series; the loaded SEG stays as it was.
    saved = save(client, loaded["id"], labelmap, parent=1)
    assert saved.status_code == 201, saved.content
    assert saved.json()["changed_voxels"] == {}
    assert saved.json()["seg_series_instance_uid"] != seg.SeriesInstanceUID


def test_seg_of_another_series_or_not_a_seg_is_refused(client, ct, shared_data):
    outcomes = import_sources(
        iter_path_sources([shared_data / DCMQI / "ct-3slice", shared_data / DCMQI / "liver.dcm"])
    )
    seg_uid = next(o.sop_instance_uid for o in outcomes if o.sop_class_uid.endswith(".66.4"))
    ct_uid = next(o.sop_instance_uid for o in outcomes if not o.sop_class_uid.endswith(".66.4"))
    base = f"/api/series/{ct.series_instance_uid}/segmentations/"
    other = client.post(base, {"seg_instance": seg_uid}, content_type="application/json")
    assert other.status_code == 422 and "does not refer to series" in other.json()["detail"]
    not_seg = client.post(base, {"seg_instance": ct_uid}, content_type="application/json")
    assert not_seg.status_code == 400 and "is not a DICOM SEG" in not_seg.json()["detail"]
    missing = client.post(base, {"seg_instance": "1.2.3"}, content_type="application/json")
    assert missing.status_code == 404


def test_users_without_study_access_get_403(ct):
    from django.contrib.auth import get_user_model

    outsider = Client()
    outsider.force_login(get_user_model().objects.create_user("outsider"))
    assert outsider.get(f"/api/series/{ct.series_instance_uid}/segmentations/").status_code == 403


# --- the working labelmap: the latest version with the drafts made since ----------------------------


def write_draft(
    segment: Segment, mask: np.ndarray, session: InteractiveSession | None = None, sequence: int = 1
) -> Draft:
    """The segment's draft as a worker writes it: a REPLACE frame over the mask's bounding box, holding the
    ``session``'s events up to ``sequence``."""
    hits = np.argwhere(mask)
    if len(hits):
        start, stop = hits.min(axis=0), hits.max(axis=0) + 1
        region = mask[start[0] : stop[0], start[1] : stop[1], start[2] : stop[2]].copy()
    else:
        start = stop = np.zeros(3, int)
        region = np.zeros((0, 0, 0), bool)
    corner = (int(start[0]), int(start[1]), int(start[2])), (int(stop[0]), int(stop[1]), int(stop[2]))
    frame = MaskFrame(0, *corner, region, replace=True)
    draft, _ = Draft.objects.update_or_create(
        segment=segment,
        defaults={
            "shape": list(mask.shape),
            "frame": encode_frame(frame),
            "empty": not len(hits),
            "session": session,
            "sequence": sequence,
        },
    )
    return draft


def working(client: Client, segmentation_id: int) -> tuple[np.ndarray, str, str]:
    response = client.get(f"/api/segmentations/{segmentation_id}/draft/")
    assert response["Content-Type"] == "application/gzip"
    layers = labelmap_of(response)
    return layers, response["X-Annovox-Base-Version"], response["X-Annovox-Draft-Segments"]


def assert_each_segment_whole_on_one_layer(layers: np.ndarray) -> None:
    for number in np.unique(layers[layers > 0]):
        assert sum(bool((layer == number).any()) for layer in layers) == 1, number


def test_working_labelmap_without_versions_is_empty_or_the_drafts(client, ct, organs):
    segmentation = organ_segmentation(client, ct)
    layers, base, drafted = working(client, segmentation["id"])
    assert layers.dtype == np.uint8 and layers.shape == (1, 20, 512, 512)
    assert not layers.any()
    assert base == "" and drafted == ""

    # Without a version, every draft counts.
    liver = organs[0] == 2
    write_draft(Segment.objects.get(segmentation_id=segmentation["id"], number=2), liver)
    layers, base, drafted = working(client, segmentation["id"])
    assert base == "" and drafted == "2"
    assert np.array_equal(layers, (liver * 2).astype(np.uint8)[np.newaxis])


def test_working_labelmap_takes_newer_drafts_and_the_version_for_the_rest(client, ct, organs):
    segmentation = organ_segmentation(client, ct)
    assert save(client, segmentation["id"], organs).status_code == 201
    segments = {s.number: s for s in Segment.objects.filter(segmentation_id=segmentation["id"])}

    # The stomach redrawn where no organ is, the pancreas erased.
    stomach = np.zeros(organs.shape[1:], bool)
    stomach[3:9, 20:60, 30:90] = True
    assert not organs[0][stomach].any()
    write_draft(segments[3], stomach)
    write_draft(segments[4], np.zeros(organs.shape[1:], bool))

    layers, base, drafted = working(client, segmentation["id"])
    assert base == "1" and drafted == "3,4"
    expected = organs.copy()
    expected[np.isin(expected, [3, 4])] = 0
    expected[0][stomach] = 3
    assert layers.dtype == np.uint8 and np.array_equal(layers, expected)

    # The version itself is unchanged.
    version = labelmap_of(client.get(f"/api/segmentations/{segmentation['id']}/versions/1/labelmap/"))
    assert np.array_equal(version, organs)


def test_drafts_older_than_the_latest_version_are_ignored(client, ct, organs):
    segmentation = organ_segmentation(client, ct)
    stale = np.zeros(organs.shape[1:], bool)
    stale[0:4, 0:50, 0:50] = True
    write_draft(Segment.objects.get(segmentation_id=segmentation["id"], number=1), stale)
    assert save(client, segmentation["id"], organs).status_code == 201  # saved after the draft

    layers, base, drafted = working(client, segmentation["id"])
    assert base == "1" and drafted == ""
    assert np.array_equal(layers, organs)


def test_a_draft_that_repeats_the_saved_mask_is_no_unsaved_work(client, ct, organs):
    """A session opened on a saved segment starts from its mask and writes it as the draft."""
    segmentation = organ_segmentation(client, ct)
    assert save(client, segmentation["id"], organs).status_code == 201
    write_draft(Segment.objects.get(segmentation_id=segmentation["id"], number=2), organs[0] == 2)

    layers, base, drafted = working(client, segmentation["id"])
    assert base == "1" and drafted == ""
    assert np.array_equal(layers, organs)


def test_a_draft_that_overlaps_other_segments_goes_on_its_own_layer(client, ct, organs):
    segmentation = organ_segmentation(client, ct)
    assert save(client, segmentation["id"], organs).status_code == 201
    # The spleen's draft covers a box across the liver and the stomach.
    spleen = np.zeros(organs.shape[1:], bool)
    spleen[5:15, 150:350, 150:350] = True
    assert set(np.unique(organs[0][spleen])) >= {2, 3}
    write_draft(Segment.objects.get(segmentation_id=segmentation["id"], number=1), spleen)

    layers, base, drafted = working(client, segmentation["id"])
    assert base == "1" and drafted == "1"
    assert layers.shape == (2, 20, 512, 512)
    assert_each_segment_whole_on_one_layer(layers)
    assert np.array_equal((layers == 1).any(axis=0), spleen)
    for number in (2, 3, 4):
        assert np.array_equal((layers == number).any(axis=0), organs[0] == number), number
    assert set(np.unique(layers[1])) == {0, 1}  # the spleen alone on the second layer


def test_working_labelmap_has_the_access_rules_of_version_labelmaps(client, ct, organs):
    from django.contrib.auth import get_user_model

    segmentation = organ_segmentation(client, ct)
    assert save(client, segmentation["id"], organs).status_code == 201
    base = f"/api/segmentations/{segmentation['id']}"
    outsider = Client()
    outsider.force_login(get_user_model().objects.create_user("outsider"))
    for other in (outsider, Client()):
        version = other.get(f"{base}/versions/1/labelmap/").status_code
        assert version in (401, 403)
        assert other.get(f"{base}/draft/").status_code == version
    missing = f"/api/segmentations/{segmentation['id'] + 1000}"
    assert client.get(f"{missing}/versions/1/labelmap/").status_code == 404
    assert client.get(f"{missing}/draft/").status_code == 404


def test_a_draft_written_after_a_save_of_events_before_it_is_no_unsaved_work(client, ct, organs, user):
    """Workers write a draft a moment after the session's last event, possibly after a save that already
    holds it (the viewer saves what is on screen, where an AI result may have been clipped by other segments):
    the event's time counts, not the draft's."""
    segmentation = organ_segmentation(client, ct)
    segment = Segment.objects.get(segmentation_id=segmentation["id"], number=1)
    session, _ = services.resume_or_start_session(user, segment, "default")
    unclipped = np.zeros(organs.shape[1:], bool)
    unclipped[2:12, 100:300, 100:300] = True
    event = services.record_event(session, PromptEvent.Kind.POINT, {"index": [5, 200, 200], "positive": True})
    assert save(client, segmentation["id"], organs).status_code == 201
    write_draft(segment, unclipped, session, event.sequence)  # written after the save

    layers, base, drafted = working(client, segmentation["id"])
    assert base == "1" and drafted == ""
    assert np.array_equal(layers, organs)

    # An event after the save is unsaved work.
    later = services.record_event(session, PromptEvent.Kind.INITIAL_MASK, {}, b"")
    write_draft(segment, unclipped, session, later.sequence)
    layers, base, drafted = working(client, segmentation["id"])
    assert base == "1" and drafted == "1"
    assert np.array_equal((layers == 1).any(axis=0), unclipped)


def test_a_new_session_starts_from_the_draft_only_when_it_is_newer_than_the_saved_version(
    client, ct, organs, user
):
    segmentation = organ_segmentation(client, ct)
    segment = Segment.objects.get(segmentation_id=segmentation["id"], number=1)
    stale = np.zeros(organs.shape[1:], bool)
    stale[0:4, 0:50, 0:50] = True
    write_draft(segment, stale)
    assert save(client, segmentation["id"], organs).status_code == 201

    session, new = services.resume_or_start_session(user, segment, "default")
    assert new and not session.events.exists()  # the saved version counts; the viewer sends what it shows
    services.close_session(session.pk)

    draft = write_draft(segment, stale)  # now newer than the version
    session, new = services.resume_or_start_session(user, segment, "default")
    events = list(session.events.all())
    assert new and [event.kind for event in events] == [PromptEvent.Kind.INITIAL_MASK]
    assert bytes(events[0].mask) == bytes(draft.frame)
