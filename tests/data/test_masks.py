"""COCO RLE without pycocotools: byte-exact against pycocotools (the oracle), decode, boxes, polygons."""

import numpy as np
import pytest

from sca.data.masks import mask_to_box, polygons_to_mask, rle_area, rle_decode, rle_encode


def _random_masks(n=150, seed=0):
    rng = np.random.default_rng(seed)
    for t in range(n):
        h, w = (int(v) for v in rng.integers(1, 50, 2))
        if t % 3 == 0:  # a block (few long runs, large deltas)
            m = np.zeros((h, w), bool)
            m[rng.integers(0, h):, rng.integers(0, w):] = True
        else:  # noise (many short runs, negative deltas)
            m = rng.random((h, w)) < rng.random()
        yield m


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' numpy-2 __array__ warning
def test_encode_matches_pycocotools_byte_for_byte():
    mask_api = pytest.importorskip("pycocotools.mask")
    for m in _random_masks():
        ref = mask_api.encode(np.asfortranarray(m.astype(np.uint8)))
        ours = rle_encode(m)
        assert ours["counts"] == ref["counts"].decode() and ours["size"] == list(m.shape)
        assert (mask_api.decode(ours) == m).all()  # pycocotools reads what we write
        x, y, w, h = mask_api.toBbox(ref)
        assert mask_to_box(m) == ((x, y, x + w, y + h) if m.any() else None)


def test_decode_round_trip_string_bytes_and_list_counts():
    for m in _random_masks(60, seed=1):
        rle = rle_encode(m)
        assert (rle_decode(rle) == m).all() and rle_area(rle) == int(m.sum())
        assert (rle_decode({"size": rle["size"], "counts": rle["counts"].encode()}) == m).all()
    # Column-major: columns (0,0) (1,0) (1,1) -> runs of 2 zeros, 1 one, 1 zero, 2 ones.
    m = np.array([[0, 1, 1], [0, 0, 1]], dtype=bool)
    assert (rle_decode({"size": [2, 3], "counts": [2, 1, 1, 2]}) == m).all()
    assert (rle_decode({"size": [2, 3], "counts": [0, 6]}) == np.ones((2, 3), bool)).all()  # starts with ones


@pytest.mark.parametrize("rle, needle", [
    ({"size": [2, 2], "counts": [1, 1]}, "summing to 4"),
    ({"size": [2, 2], "counts": [5, -1]}, "non-negative"),
    ({"counts": "PP"}, "size"),
    ({"size": [2, 2], "counts": "\x01"}, "invalid character"),
    ({"size": [2, 2], "counts": "P"}, "ends inside"),  # 'P' = 48 + 0x20: "more groups follow", then nothing
])
def test_malformed_rle_raises_naming_the_problem(rle, needle):
    with pytest.raises(ValueError, match=needle):
        rle_decode(rle)


def test_mask_to_box_is_pixel_edge_and_empty_is_none():
    m = np.zeros((10, 20), bool)
    assert mask_to_box(m) is None
    m[2:5, 3:8] = True
    assert mask_to_box(m) == (3.0, 2.0, 8.0, 5.0)


def test_polygons_fill_pixel_centres_inside():
    # A 10 x 6 axis-aligned rectangle with pixel-edge corners covers exactly 60 pixels.
    m = polygons_to_mask([[2, 3, 12, 3, 12, 9, 2, 9]], height=15, width=20)
    assert m.sum() == 60 and mask_to_box(m) == (2.0, 3.0, 12.0, 9.0)
    two = polygons_to_mask([[0, 0, 4, 0, 4, 4, 0, 4], [10, 10, 12, 10, 12, 12, 10, 12]], 15, 20)
    assert two.sum() == 16 + 4
    with pytest.raises(ValueError, match="3 x,y pairs"):
        polygons_to_mask([[0, 0, 1, 1]], 5, 5)
