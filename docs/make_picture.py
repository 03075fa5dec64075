"""Render ``docs/face3d.png``, the README picture, from the face model alone (no photograph).

Top row: three frames of a synthetic clip (``tracker.synth``: the ICT head with a painted albedo,
SH lighting, a procedural background). Bottom row: the same frames after ``face3d track``, drawn
by the overlay in its three modes (shaded, wire, points).

Usage (see ``docs/README-picture.md``)::

    FACE3D_MODEL=../shared/models/ict/ict_face_model.npz python docs/make_picture.py docs/face3d.png
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="output PNG")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--tile", type=int, default=208, help="tile size in pixels")
    args = ap.parse_args(argv)

    from tracker.drawer import FaceDrawer
    from tracker.facemodel import load_face_model
    from tracker.overlay import faces_of, write_image
    from tracker.pipeline import make_camera
    from tracker.sources import open_source
    from tracker.synth import SynthSettings, synth, synth_params
    from tracker.track import track_video
    from tracker.trackconfig import load_track_config

    model = load_face_model(None)
    s = SynthSettings(seconds=args.seconds, size=(448, 448), seed=args.seed)
    _, truth = synth_params(model, s)
    w = {n: np.array([p.expression[i] for p in truth]) for i, n in enumerate(model.exp_names)}
    from tracker.rotation import quat_to_euler

    yaw = quat_to_euler(np.stack([p.rotation for p in truth]))[:, 0]
    picks = [int(np.argmax(w["mouthSmile_L"] - 0.01 * np.abs(yaw))),
             int(np.argmax(w["jawOpen"] + 0.01 * np.abs(yaw))),
             int(np.argmax(w["browInnerUp_L"] + 0.01 * np.abs(yaw) - w["eyeBlink_L"]))]
    with tempfile.TemporaryDirectory() as tmp:
        clip = synth(Path(tmp) / "clip.mp4", model, settings=s).video
        cfg = load_track_config()
        _, results = track_video(str(clip), model, cfg, None, progress=False)
        with open_source(str(clip)) as src:
            cam = make_camera(src.info, cfg)
            frames = {f.index: f.image for f in src if f.index in picks}
    top, bottom = [], []
    for k, mode in zip(picks, ("shaded", "wire", "points")):
        img = frames[k]
        drawn = FaceDrawer(model, cam, mode).draw(img, faces_of(results[k]))
        top.append(_tile(img, args.tile))
        bottom.append(_tile(drawn, args.tile))
    picture = np.concatenate([np.concatenate(top, 1), np.concatenate(bottom, 1)], 0)
    write_image(args.out, picture)
    print(f"frames {picks} of seed {args.seed} -> {args.out} ({Path(args.out).stat().st_size // 1024} KB)")
    return 0


def _tile(img: np.ndarray, size: int) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    crop = img[int(0.05 * h):int(0.85 * h), int(0.1 * w):int(0.9 * w)]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


if __name__ == "__main__":
    raise SystemExit(main())
