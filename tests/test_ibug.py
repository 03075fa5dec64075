"""tracker.ibug: the iBUG .pts reader/writer, annotated-image discovery and the 68-point NME."""

from __future__ import annotations

import numpy as np
import pytest

from tracker.errors import InputError
from tracker.ibug import (
    find_annotated_images,
    format_pts,
    inter_ocular_68,
    nme_pct,
    parse_pts,
    read_pts,
    write_pts,
)


def _ibug_text(points: np.ndarray) -> str:
    """A .pts file as the 300-W annotators wrote them (1-based, two decimals, CRLF endings)."""
    body = "\r\n".join(f"{x:.2f} {y:.2f}" for x, y in points)
    return f"version: 1\r\nn_points:  {len(points)}\r\n{{\r\n{body}\r\n}}\r\n"


def _face68(iod: float = 100.0) -> np.ndarray:
    """68 distinct points with the outer eye corners (36, 45) ``iod`` apart."""
    rng = np.random.default_rng(3)
    p = rng.uniform(0, 200, (68, 2))
    p[36], p[45] = (50.0, 80.0), (50.0 + iod, 80.0)
    return p


def test_reads_a_hand_written_300w_file_as_one_based(tmp_path):
    raw = np.array([[1.0, 1.0], [640.0, 480.0], [123.25, 45.5]])
    path = tmp_path / "indoor_001.pts"
    path.write_bytes(_ibug_text(raw).encode())
    got = read_pts(path)
    assert got.shape == (3, 2) and got.dtype == np.float64
    # 1-based pixel centres -> continuous coordinates with the image corner at 0
    np.testing.assert_allclose(got, raw - 0.5)
    np.testing.assert_allclose(read_pts(path, one_based=False), raw + 0.5)
    assert parse_pts(path.read_text()).version == "1"


def test_write_then_read_round_trip(tmp_path):
    pts = _face68()
    path = write_pts(tmp_path / "a.pts", pts)
    text = path.read_text()
    assert text.startswith("version: 1\nn_points:  68\n{\n") and text.rstrip().endswith("}")
    np.testing.assert_allclose(read_pts(path), pts, atol=5e-4)
    # the file holds the 1-based values
    np.testing.assert_allclose(parse_pts(text).points, pts + 0.5, atol=5e-4)
    assert format_pts(pts, one_based=False) != format_pts(pts)


def test_extra_header_fields_and_comments_are_kept_apart(tmp_path):
    text = "# from a labelling tool\nversion: 1\nimage_size_x: 640\nn_points: 2\n{\n1 2\n3 4\n}\n"
    f = parse_pts(text)
    np.testing.assert_allclose(f.points, [[1, 2], [3, 4]])
    assert dict(f.header) == {"image_size_x": "640"}


@pytest.mark.parametrize("text,words", [
    ("", "no '{'"),
    ("version: 1\n{\n1 2\n}\n", "no n_points"),
    ("version: 1\nn_points: 2\n{\n1 2\n", "no closing"),
    ("version: 1\nn_points: 3\n{\n1 2\n3 4\n}\n", "says 3 points, found 2"),
    ("version: 1\nn_points: 1\n{\n1 two\n}\n", "two numbers"),
    ("version: 1\nn_points: 1\n{\n1 2 3\n}\n", "two numbers"),
    ("version: 1\nn_points: x\n{\n}\n", "not an integer"),
    ("version: 1\nn_points: 1\n{\nnan 2\n}\n", "non-finite"),
    ("hello world\n", "not an iBUG .pts file"),
])
def test_malformed_files_raise_one_clear_line(tmp_path, text, words):
    path = tmp_path / "bad.pts"
    path.write_text(text)
    with pytest.raises(InputError) as caught:
        read_pts(path)
    msg = str(caught.value)
    assert words in msg and str(path) in msg and "\n" not in msg


def test_unreadable_files_raise_input_error(tmp_path):
    binary = tmp_path / "binary.pts"
    binary.write_bytes(bytes(range(256)))
    for path in (binary, tmp_path / "missing.pts", tmp_path):
        with pytest.raises(InputError, match="cannot read .pts file"):
            read_pts(path)


def test_find_annotated_images(tmp_path):
    for name in ("a.png", "a.pts", "b.pts", "c.jpg", "sub/d.JPG", "sub/d.pts", "sub/e.txt", "sub/e.pts"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    pairs = find_annotated_images(tmp_path, tmp_path / "nope")
    assert pairs == [(tmp_path / "a.png", tmp_path / "a.pts"),
                     (tmp_path / "sub/d.JPG", tmp_path / "sub/d.pts")]
    assert find_annotated_images() == []


def test_nme_is_the_mean_error_over_the_outer_eye_corner_distance():
    gt = _face68(iod=80.0)
    assert inter_ocular_68(gt) == pytest.approx(80.0)
    shifted = gt + np.array([3.0, 4.0])            # every point 5 px off
    assert nme_pct(shifted, gt) == pytest.approx(100.0 * 5 / 80)
    assert nme_pct(shifted, gt, include_jaw=False) == pytest.approx(100.0 * 5 / 80)
    jaw_only = gt.copy()
    jaw_only[:17] += 8.0                            # only the jaw moves
    assert nme_pct(jaw_only, gt, include_jaw=False) == 0.0
    assert nme_pct(jaw_only, gt) == pytest.approx(100.0 * 8 * np.sqrt(2) * 17 / 68 / 80)
    assert nme_pct(gt, gt) == 0.0


def test_nme_rejects_bad_shapes_and_degenerate_truth():
    gt = _face68()
    with pytest.raises(InputError, match="68, 2"):
        nme_pct(gt[:51], gt)
    flat = gt.copy()
    flat[45] = flat[36]
    with pytest.raises(InputError, match="eye corners"):
        nme_pct(gt, flat)
