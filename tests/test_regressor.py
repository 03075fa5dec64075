"""tracker.regressor: backends behind one handle, the crop → image pose conversion, and the shipped
default weights on a real clip that was held out of their training."""

from __future__ import annotations

import numpy as np
import pytest

from tracker.align import apply_affine, crop_face
from tracker.camera import camera_from_fov, project
from tracker.errors import BackendUnavailableError, ModelError
from tracker.regressor import (
    DEFAULT_WEIGHTS,
    make_regressor,
    ray_rotation,
    rot6d_to_matrix,
)
from tracker.rotation import quat_to_matrix
from tracker.types import Landmarks


@pytest.fixture(scope="module")
def fresh_onnx(tmp_path_factory, model):
    """An untrained network (zero head) exported to ONNX and TorchScript."""
    torch = pytest.importorskip("torch")
    from trainer.export import export_onnx, export_torchscript
    from trainer.net import NetConfig, RegressorNet

    torch.manual_seed(0)
    net = RegressorNet(NetConfig(), model.n_identity, model.n_expression).eval()
    with torch.no_grad():  # a non-zero head, so that backends are compared on real numbers
        net.head.weight.normal_(0.0, 0.01)
    d = tmp_path_factory.mktemp("reg")
    zero = RegressorNet(NetConfig(), model.n_identity, model.n_expression).eval()
    return {"zero": export_onnx(zero, d / "zero.onnx"), "onnx": export_onnx(net, d / "r.onnx"),
            "ts": export_torchscript(net, d / "r.pt")}


@pytest.fixture(scope="module")
def frame_and_landmarks(videos):
    from tracker.landmarks import LandmarkDetector
    from tracker.sources import open_source

    with open_source(str(videos["d3"])) as src:
        frame = next(iter(src))
        info = src.info
    with LandmarkDetector(static=True) as det:
        faces = det.detect(frame.image, 0.0)
    return frame.image, faces[0], camera_from_fov(info.width, info.height, 50.0, info.sar)


def test_zero_head_places_the_mean_face_on_the_template(fresh_onnx, frame_and_landmarks):
    """Zero output: the pose anchor (a point on the face) projects to the crop centre, where the
    template puts it (mapped back through the crop), the head faces along its viewing ray, mean
    face, no expression, ambient light."""
    from tracker.align import POSE_ANCHOR_M, anchor_offset

    image, lm, cam = frame_and_landmarks
    reg = make_regressor(fresh_onnx["zero"])
    assert reg.anchor == POSE_ANCHOR_M and np.allclose(anchor_offset(POSE_ANCHOR_M), 0.0)
    p = reg.predict(image, lm, cam)
    crop = crop_face(image, lm.points, reg.size)
    a = np.vstack([crop.affine, [0, 0, 1]])
    want = apply_affine(np.linalg.inv(a)[:2], np.full(2, reg.size / 2.0))
    r = quat_to_matrix(p.rotation)
    anchor_cam = r @ np.asarray(POSE_ANCHOR_M) + p.translation
    assert np.allclose(project(cam, anchor_cam[None])[0], want, atol=1e-6)
    # rotation = ray rotation, up to the crop's roll about the optical axis
    fwd = r @ np.array([0.0, 0.0, 1.0])  # the face's +z (toward the viewer at rest)
    assert np.allclose(fwd, -anchor_cam / np.linalg.norm(anchor_cam), atol=1e-6)
    assert np.all(p.identity == 0) and np.all(p.expression == 0) and np.all(p.albedo == 0)
    assert np.allclose(p.lighting[::9], 0.8) and p.albedo.shape == (16, 3)


def test_backends_agree(fresh_onnx, frame_and_landmarks):
    pytest.importorskip("torch")
    image, lm, cam = frame_and_landmarks
    a = make_regressor(fresh_onnx["onnx"]).predict(image, lm, cam)
    b = make_regressor(fresh_onnx["ts"], backend="torch").predict(image, lm, cam)
    assert np.abs(a.identity).max() > 1e-3  # a non-trivial prediction
    for x, y in ((a.rotation, b.rotation), (a.translation, b.translation), (a.expression, b.expression),
                 (a.identity, b.identity), (a.lighting, b.lighting), (a.albedo, b.albedo)):
        assert np.allclose(x, y, atol=1e-4)


def test_errors(tmp_path, fresh_onnx):
    with pytest.raises(ModelError):
        make_regressor(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(ModelError):
        make_regressor(bad)
    with pytest.raises(ValueError):
        make_regressor(fresh_onnx["onnx"], backend="openvino")  # type: ignore[arg-type]
    try:
        import torch
        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    if not cuda:
        with pytest.raises(BackendUnavailableError):
            make_regressor(fresh_onnx["onnx"], backend="tensorrt")


def test_rotation_helpers():
    assert np.allclose(rot6d_to_matrix(np.zeros(6)), np.eye(3))
    r = ray_rotation(np.array([0.3, -0.2, -1.0]))
    assert np.allclose(r @ r.T, np.eye(3)) and np.isclose(np.linalg.det(r), 1.0)
    d = np.array([0.3, -0.2, -1.0])
    assert np.allclose(r @ [0, 0, -1.0], d / np.linalg.norm(d))


@pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason="no shipped regressor weights")
def test_default_weights_on_a_held_out_clip(model, videos):
    """The shipped weights alone (no fitting) on d3, held out of their training: projected 68
    points (jaw excluded) vs MediaPipe's 68-equivalents, % of the inter-ocular distance.

    The issue's goal is a mean within 7 %; measured 4.8 % on d3's first 200 frames
    (REGRESSOR.md; 11.5 % before the pose was anchored on the face)."""
    from tracker.correspondence import load_mp68
    from tracker.landmarks import LandmarkDetector, inter_ocular
    from tracker.quality import NO_JAW, point_error_pct
    from tracker.sources import open_source
    from tracker.track import project_lmk68

    reg = make_regressor()
    mp68 = load_mp68()
    errs = []
    with open_source(str(videos["d3"])) as src, LandmarkDetector() as det:
        info = src.info
        cam = camera_from_fov(info.width, info.height, 50.0, info.sar)
        for frame in src:
            if frame.index >= 120:
                break
            faces = det.detect(frame.image, frame.time_s, info.sar)
            if frame.index % 4 or not faces:
                continue
            p = reg.predict(frame.image, faces[0], cam)
            assert p.lighting is not None and p.lighting.shape == (27,)
            assert np.all((p.expression >= 0) & (p.expression <= 1))
            t68 = mp68.points(faces[0].points[:468, :2])
            errs.append(point_error_pct(project_lmk68(model, cam, p)[NO_JAW], t68[NO_JAW],
                                        inter_ocular(faces[0].points)))
    assert len(errs) >= 20
    assert np.mean(errs) < 7.0, np.mean(errs)
    assert isinstance(Landmarks(np.zeros((478, 3), np.float32)), Landmarks)


def test_rotate_sh_moves_the_light_with_the_frame():
    """Shading image-frame normals with the rotated SH equals shading the crop-frame normals."""
    from kernels.shading import sh_shade
    from tracker.regressor import rotate_sh
    from tracker.rotation import euler_to_quat

    rng = np.random.default_rng(3)
    g = rng.normal(size=27).astype(np.float32)
    rz = quat_to_matrix(euler_to_quat(0.0, 0.0, 25.0))
    n_img = rng.normal(size=(100, 3))
    n_img /= np.linalg.norm(n_img, axis=1, keepdims=True)
    alb = np.ones((100, 3))
    want = sh_shade(n_img @ rz.T, alb, g)
    got = sh_shade(n_img, alb, rotate_sh(g, rz))
    assert np.allclose(got, want, atol=1e-5)
    assert np.allclose(rotate_sh(g, np.eye(3)), g, atol=1e-6)


@pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason="no shipped regressor weights")
def test_default_weights_on_a_rendered_clip(model, tmp_path):
    """A clip rendered by tracker.synth with known coefficients, through MediaPipe: the regressor
    alone gets the expression weights within 0.12 mean absolute error and the head rotation within
    3° (the issue's goals; measured 0.029 and 2.0° on the 4 s clip, REGRESSOR.md)."""
    pytest.importorskip("tracker.synth")
    from trainer.benchmark import eval_rendered_clips

    res = eval_rendered_clips(DEFAULT_WEIGHTS, model, tmp_path, seeds=(1,), seconds=2.0)
    m = res["synth1.mp4"]
    assert m["tracked"] >= 0.9 * m["frames"]
    assert m["expression_mae"] < 0.12 and m["rotation_deg"] < 3.0, m


def test_weights_name_their_pose_anchor():
    """Format-2 weights record the model point their pose refers to; format-1 files (none
    recorded) were trained at the ICT origin and are read that way; a malformed entry is a
    ModelError, not a silently shifted head."""
    from tracker.align import LEGACY_POSE_ANCHOR_M, POSE_ANCHOR_M
    from tracker.regressor import weights_anchor

    assert weights_anchor({}) == LEGACY_POSE_ANCHOR_M
    assert weights_anchor({"pose_anchor": "[0.0, -0.004, 0.1]"}) == POSE_ANCHOR_M
    assert make_regressor().anchor == POSE_ANCHOR_M  # the shipped weights
    for bad in ("[1, 2]", "origin", "{\"x\": 1}"):
        with pytest.raises(ModelError):
            weights_anchor({"pose_anchor": bad})


@pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason="no shipped regressor weights")
def test_default_weights_photometric_and_refinement_on_a_held_out_clip(model, videos, tmp_path):
    """The shipped weights on WDA (held out of their training), through the trainer's own
    preparation and measures: the full reconstruction's photometric error on the skin at least
    30 % below a grey-albedo ambient render of the same geometry (measured 49 % on these 24
    crops), and the fitter warm-started from the regressor reaches a lower landmark residual in
    3 iterations than fitting alone in 12 (1.95 vs 2.30 % IOD), its 68 points about as close to
    MediaPipe's (2.76 vs 2.50 %)."""
    pytest.importorskip("torch")
    import torch

    from tracker.correspondence import load_correspondence
    from trainer.benchmark import eval_clip
    from trainer.data import PrepareConfig, load_cache, prepare
    from trainer.evaluate import evaluate_cache, onnx_predictor
    from trainer.facelayer import FaceLayer
    from trainer.render import CpuRenderer

    clip = videos["WDA_KatieHill_000"]
    prepare([clip], tmp_path / "cache", model, PrepareConfig(size=128, every=8, max_frames=24))
    data = load_cache(tmp_path / "cache")
    face = FaceLayer(model, load_correspondence())
    m = evaluate_cache(None, face, CpuRenderer(), data, 128, torch.device("cpu"),
                       predict=onnx_predictor(DEFAULT_WEIGHTS))
    assert m["samples"] >= 20
    assert m["photo_gain"] >= 0.30, m
    assert m["nme68_pct"] < 7.0, m

    r = eval_clip(make_regressor(), model, clip, every=8, max_frames=20)
    assert r["frames"] >= 15 and r["refine_iterations"] < r["fit_iterations"]
    assert r["refined_rms_pct"] < r["fit_rms_pct"], r
    assert r["refined_nme68_pct"] < r["fit_nme68_pct"] + 0.5, r
