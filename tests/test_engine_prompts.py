"""Prompt validation, rasterisation and encoding (inference/prompts.py), without a network."""

import numpy as np
import pytest
import torch

from inference.errors import PromptError
from inference.prompts import (
    FP16_MAX,
    RENORMALISED_INTENSITY,
    Stamp,
    box_stamp,
    check_box,
    check_index,
    check_polygon,
    check_polyline,
    check_positive,
    check_slice_mask,
    draw_channels,
    fp16,
    next_intensity,
    normalise_channels,
    point_ball,
    point_stamp,
    rasterise_polygon,
    rasterise_polyline,
    slice_stamp,
)

SHAPE = (20, 30, 40)


def test_point_ball_is_one_in_the_centre_and_fades_to_its_radius():
    ball = point_ball(4)
    assert ball.shape == (9, 9, 9)
    assert ball[4, 4, 4] == 1.0 and ball.max() == 1.0
    grid = np.indices(ball.shape) - 4
    distance = np.sqrt((grid**2).sum(axis=0))
    assert (ball[distance > 4] == 0).all() and (ball[distance <= 4] > 0).all()
    for axis in range(3):  # symmetric, decreasing outwards along every axis
        np.testing.assert_array_equal(ball, np.flip(ball, axis))
    assert list(ball[4, 4, 4:]) == sorted(ball[4, 4, 4:], reverse=True)


def test_point_stamp_is_clipped_to_the_image():
    stamp = point_stamp((0, 29, 5), channel=3, radius=4, intensity=1.0, shape=SHAPE)
    assert stamp.box == ((0, 5), (25, 30), (1, 10))
    channels = draw_channels([stamp], 7, ((0, 20), (0, 30), (0, 40)))
    assert channels[3, 0, 29, 5] == 1 and channels[3].sum() > 0
    assert channels[[0, 1, 2, 4, 5, 6]].abs().sum() == 0


def test_channels_merge_by_maximum_and_are_zero_outside_the_image():
    older = box_stamp(((5, 6), (0, 10), (0, 10)), channel=1, intensity=1.0)
    newer = box_stamp(((5, 6), (5, 15), (5, 15)), channel=1, intensity=1 / 0.98)
    region = ((4, 7), (-3, 20), (-3, 20))
    channels = draw_channels([older, newer], 7, region)
    assert channels.dtype == torch.float16 and channels.shape == (7, 3, 23, 23)
    assert channels[1, 1, 3 + 2, 3 + 2] == fp16(1.0)
    assert channels[1, 1, 3 + 7, 3 + 7] == fp16(1 / 0.98)  # the overlap holds the larger value
    assert channels[1, :, :3].abs().sum() == 0  # outside the image
    assert channels[1, 0].abs().sum() == 0 and channels[1, 2].abs().sum() == 0


def test_decay_by_running_intensity():
    """The newest prompt reaches the network as 1, each older one 0.98 times the next."""
    intensity, stamps = 1.0, ()
    for n in range(3):
        intensity, stamps = next_intensity(intensity, 0.98, stamps)
        stamps = (*stamps, box_stamp(((n, n + 1), (0, 2), (0, 2)), channel=1, intensity=intensity))
    channels = draw_channels(stamps, 7, ((0, 3), (0, 2), (0, 2)))
    channels[0] = 1  # the previous segmentation is not divided
    normalise_channels(channels, intensity, prev_seg=0)
    np.testing.assert_allclose(channels[1, :, 0, 0].float().numpy(), [0.98**2, 0.98, 1.0], atol=1e-3)
    assert (channels[0] == 1).all()


def test_renormalisation_before_float16_overflow():
    stamp = point_stamp((5, 5, 5), channel=3, radius=4, intensity=FP16_MAX * 0.99, shape=SHAPE)
    intensity, (scaled,) = next_intensity(FP16_MAX * 0.99, 0.98, (stamp,))
    assert intensity == RENORMALISED_INTENSITY
    assert scaled.footprint is not None and stamp.footprint is not None
    assert np.isfinite(scaled.footprint.astype(np.float32)).all()
    np.testing.assert_allclose(
        scaled.footprint.astype(np.float32) / intensity,
        stamp.footprint.astype(np.float32) / (FP16_MAX / 0.98 * 0.99),
        rtol=2e-3,
    )
    assert next_intensity(3.0, 1.0, ()) == (3.0, ())  # no decay: the intensity never grows


def test_stamps_are_small():
    drawn = np.zeros((30, 40), dtype=bool)
    drawn[10:12, 5:25] = True
    stamp = slice_stamp(0, 7, drawn, channel=5, intensity=1.0)
    assert stamp.box == ((7, 8), (10, 12), (5, 25)) and stamp.nbytes == 40
    assert box_stamp(((0, 1), (0, 30), (0, 40)), 1, 1.0).nbytes == 0
    assert Stamp(1, ((0, 1), (0, 1), (0, 1))).values(((0, 1), (0, 1), (0, 1))).item() == 1


# --- rasterisation -------------------------------------------------------------------------------------


def test_polyline_stroke_has_the_given_thickness():
    drawn = rasterise_polyline(np.array([[10.0, 5.0], [10.0, 30.0]]), (30, 40), (2, 2))
    rows = np.flatnonzero(drawn.any(axis=1))
    cols = np.flatnonzero(drawn.any(axis=0))
    assert list(rows) == [10, 11] and (cols[0], cols[-1]) == (5, 31)
    dot = rasterise_polyline(np.array([[3.0, 3.0]]), (30, 40), (3, 3))
    assert dot.sum() == 9 and dot[2:5, 2:5].all()


def test_polyline_is_connected():
    coords = np.array([[2.0, 1.0], [25.0, 9.0], [4.0, 37.0]])
    drawn = rasterise_polyline(coords, (30, 40), (1, 1))
    from scipy.ndimage import label

    assert label(drawn, structure=np.ones((3, 3)))[1] == 1
    for point in coords.astype(int):
        assert drawn[tuple(point)]


def test_polygon_is_filled_with_its_outline():
    square = np.array([[5.0, 5.0], [5.0, 14.0], [14.0, 14.0], [14.0, 5.0]])
    drawn = rasterise_polygon(square, (30, 40))
    expected = np.zeros((30, 40), dtype=bool)
    expected[5:15, 5:15] = True
    np.testing.assert_array_equal(drawn, expected)
    # concave: an L, whose notch stays empty
    ell = np.array([[0.0, 0.0], [0.0, 20.0], [10.0, 20.0], [10.0, 10.0], [20.0, 10.0], [20.0, 0.0]])
    drawn = rasterise_polygon(ell, (30, 40))
    assert drawn[5, 15] and drawn[15, 5] and not drawn[15, 15]
    assert drawn[:21, :21].sum() == 21 * 21 - 10 * 10


def test_thin_polygon_keeps_its_outline():
    drawn = rasterise_polygon(np.array([[3.0, 3.0], [3.5, 20.0], [4.0, 3.0]]), (30, 40))
    assert drawn[3, 3] and drawn[4, 3] and drawn.sum() >= 17


# --- validation ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "index",
    [(20, 0, 0), (0, -1, 0), (0, 0, 40), (1, 2), (1.0, 2, 3), (True, 2, 3), "abc", None, (1, 2, 3, 4)],
)
def test_bad_points_are_refused(index):
    with pytest.raises(PromptError):
        check_index(index, SHAPE)


def test_points_may_be_numpy_integers():
    assert check_index(np.array([1, 2, 3]), SHAPE) == (1, 2, 3)
    assert check_index((np.int64(19), 29, 39), SHAPE) == (19, 29, 39)


@pytest.mark.parametrize(
    ("start", "stop"),
    [
        ((0, 0, 0), (0, 5, 5)),
        ((5, 0, 0), (4, 5, 5)),
        ((0, 0, 0), (1, 31, 5)),
        ((-1, 0, 0), (1, 5, 5)),
        ((0, 0), (1, 2)),
    ],
)
def test_bad_boxes_are_refused(start, stop):
    with pytest.raises(PromptError):
        check_box(start, stop, SHAPE)


def test_box_is_half_open():
    assert check_box((19, 0, 0), (20, 30, 40), SHAPE) == ((19, 20), (0, 30), (0, 40))


@pytest.mark.parametrize("positive", [1, "yes", None, 0.0])
def test_positive_must_be_a_bool(positive):
    with pytest.raises(PromptError):
        check_positive(positive)


def test_slice_masks():
    mask = np.zeros((20, 40), dtype=np.uint8)
    mask[3, 4] = 7
    axis, index, drawn = check_slice_mask(mask, 1, 29, SHAPE)
    assert (axis, index) == (1, 29) and drawn.dtype == bool and drawn.sum() == 1
    for bad_mask, bad_axis, bad_index in [
        (mask, 0, 0),  # the shape of another axis' slices
        (mask.astype(np.float32), 1, 0),
        (np.zeros((20, 40), dtype=bool), 1, 0),  # empty
        (mask, 3, 0),
        (mask, 1, 30),
        (mask.tolist(), 1, 0),
        (mask, None, 0),
    ]:
        with pytest.raises(PromptError):
            check_slice_mask(bad_mask, bad_axis, bad_index, SHAPE)


def test_polylines_lie_on_one_slice():
    axis, index, drawn = check_polyline([(4, 2, 3), (4, 20, 30)], None, None, SHAPE, (2, 2, 2))
    assert (axis, index) == (0, 4) and drawn.shape == (30, 40)
    # a line along one axis is on two slice planes: the axis decides
    axis, index, drawn = check_polyline([(4, 2, 3), (4, 2, 30)], 1, None, SHAPE, (3, 2, 2))
    assert (
        (axis, index) == (1, 2)
        and drawn.shape == (20, 40)
        and list(np.flatnonzero(drawn.any(1))) == [3, 4, 5]
    )
    for points, axis, index in [
        ([(4, 2, 3), (4, 2, 30)], None, None),  # ambiguous
        ([(4, 2, 3), (5, 20, 30)], None, None),  # not on one slice
        ([(4, 2, 3), (4, 20, 30)], 1, None),  # not on a slice of axis 1
        ([(4, 2, 3), (4, 20, 30)], None, 5),  # on slice 4, not 5
        ([(4.5, 2, 3), (4.5, 20, 30)], None, None),  # between slices
        ([(4, 2, 3), (4, 20, 40)], None, None),  # outside
        ([(4, 2, 3), (4, float("nan"), 3)], None, None),
        ([], None, None),
        ([(1, 2)], None, None),
        ("abc", None, None),
    ]:
        with pytest.raises(PromptError):
            check_polyline(points, axis, index, SHAPE, (2, 2, 2))


def test_degenerate_polygons_are_refused():
    for polygon in [
        [(3, 1, 1), (3, 5, 5)],
        [(3, 1, 1), (3, 5, 5), (3, 1, 1)],
        [(3, 1, 1), (3, 5, 5), (3, 9, 9)],  # collinear: no area
    ]:
        with pytest.raises(PromptError, match="degenerate"):
            check_polygon(polygon, None, None, SHAPE)
    axis, index, drawn = check_polygon([(3, 1, 1), (3, 1, 9), (3, 9, 1)], None, None, SHAPE)
    assert (axis, index) == (0, 3) and drawn[2, 2] and not drawn[8, 8]
