"""The offline demo: five small task models trained on synthetic humans, shipped in the package.

``run_demo`` renders a synthetic scene (or takes your image), runs segmentation, pose, normals,
pointmap and albedo with the bundled models, and writes a contact sheet and an HTML page. The demo
models were trained with ``tools/train_demo_models.py`` (the ``<task>-tiny`` recipes) on procedural
figures only: they show the pipeline end to end, not real-world accuracy. For real images use the
official checkpoints (``sapiens2 predict --model facebook/sapiens2-seg-1b ...``).
"""

from __future__ import annotations

import html
import json
import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

logger = logging.getLogger(__name__)

DEMO_TASKS = ("seg", "pose", "normal", "pointmap", "albedo")
DEMO_INPUT = (256, 192)


def demo_model_path(task: str) -> Path:
    """The bundled demo checkpoint of ``task`` (official layout, bfloat16)."""
    if task not in DEMO_TASKS:
        raise ValueError(f"no demo model for task {task!r}; demo tasks: {', '.join(DEMO_TASKS)}")
    path = Path(str(resources.files("sapiens2.assets.demo").joinpath(f"{task}.safetensors")))
    if not path.is_file():
        raise FileNotFoundError(f"the demo model {path} is missing from this installation")
    return path


@dataclass
class DemoResult:
    sheet: Path
    page: Path
    summary: dict


def _label(panel: np.ndarray, text: str) -> np.ndarray:
    bar = np.full((22, panel.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (20, 20, 20), 1, cv2.LINE_AA)
    return np.concatenate([bar, panel], axis=0)


def _fit(panel: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    if panel.shape[:2] == hw:
        return panel
    return cv2.resize(panel, (hw[1], hw[0]), interpolation=cv2.INTER_AREA)


def _row(panels: list[tuple[str, np.ndarray]], hw: tuple[int, int]) -> np.ndarray:
    gap = np.full((hw[0] + 22, 4, 3), 255, np.uint8)
    parts = []
    for name, p in panels:
        parts += [_label(_fit(p, hw), name), gap]
    return np.concatenate(parts[:-1], axis=1)


def synthetic_scene(seed: int = 0, size: tuple[int, int] = (384, 288)):
    """A rendered synthetic scene with its exact labels (see ``sapiens2.data.synth``)."""
    from sapiens2.data.synth.render import SynthConfig, render_sample

    return render_sample(np.random.default_rng(seed), SynthConfig(*size, people_max=2))


def run_demo(
    out: str | Path, *, image: np.ndarray | None = None, seed: int = 0, device: str = "cpu"
) -> DemoResult:
    """Runs the five demo models and writes ``contact_sheet.png``, ``index.html`` and the
    per-task pictures into ``out``.

    Args:
        out: output folder.
        image: an RGB uint8 image to use instead of a synthetic scene (no ground-truth row then).
        seed: which synthetic scene to render.
        device: where to run the models.
    """
    from sapiens2.inference.predictor import Predictor
    from sapiens2.viz.dense import albedo_to_rgb, depth_to_rgb, normals_to_rgb
    from sapiens2.viz.pose import draw_pose
    from sapiens2.viz.seg import seg_overlay

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scene = None
    if image is None:
        scene = synthetic_scene(seed)
        image = scene.image
    seg = Predictor(
        "seg", demo_model_path("seg"), device=device, dtype="fp32", input_size=DEMO_INPUT
    )
    labels = seg.predict(image).labels
    person = labels > 0
    pose = Predictor(
        "pose",
        demo_model_path("pose"),
        device=device,
        dtype="fp32",
        input_size=DEMO_INPUT,
        mask_model=seg,
    )
    kp = pose.predict(image)
    normal = Predictor(
        "normal", demo_model_path("normal"), device=device, dtype="fp32", input_size=DEMO_INPUT
    )
    normals = normal.predict(image, masks=person).normals
    pointmap = Predictor("pointmap", demo_model_path("pointmap"), device=device, dtype="fp32")
    points = pointmap.predict(image, masks=person)
    albedo = Predictor(
        "albedo", demo_model_path("albedo"), device=device, dtype="fp32", input_size=DEMO_INPUT
    )
    alb = albedo.predict(image, masks=person).albedo

    hw = image.shape[:2]
    depth = points.points[..., 2]
    pred = [
        ("input", image),
        ("segmentation", seg_overlay(image, labels)),
        ("pose (308 keypoints)", draw_pose(image, kp.keypoints, kp.scores, kpt_thr=0.3)),
        ("normals", normals_to_rgb(normals, person)),
        ("depth", depth_to_rgb(depth, person)),
        ("albedo", albedo_to_rgb(alb, person)),
    ]
    rows = [_row(pred, hw)]
    if scene is not None:
        vis = scene.keypoints[..., 2] > 0
        gt = [
            ("ground truth", image),
            ("segmentation", seg_overlay(image, scene.seg)),
            (
                "pose",
                draw_pose(image, scene.keypoints[..., :2], vis.astype(np.float32), kpt_thr=0.5),
            ),
            ("normals", normals_to_rgb(scene.normal, scene.mask > 0)),
            ("depth", depth_to_rgb(scene.pointmap[..., 2], scene.mask > 0)),
            ("albedo", albedo_to_rgb(scene.albedo.astype(np.float32) / 255, scene.mask > 0)),
        ]
        rows.append(_row(gt, hw))
    sheet = np.concatenate(
        [r for row in rows for r in (row, np.full((6, row.shape[1], 3), 255, np.uint8))][:-1]
    )
    sheet_path = out / "contact_sheet.png"
    cv2.imwrite(str(sheet_path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    for name, panel in pred[1:]:
        fname = name.split(" ")[0] + ".png"
        cv2.imwrite(str(out / fname), cv2.cvtColor(panel, cv2.COLOR_RGB2BGR))
    summary = {
        "image_size": list(hw),
        "people_found": len(kp.boxes),
        "person_pixels": int(person.sum()),
        "median_depth_m": float(np.median(depth[person])) if person.any() else None,
        "source": f"synthetic scene seed {seed}" if scene is not None else "user image",
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    page = out / "index.html"
    page.write_text(_page(summary, [n.split(" ")[0] for n, _ in pred[1:]]))
    return DemoResult(sheet_path, page, summary)


def _page(summary: dict, panels: list[str]) -> str:
    imgs = "\n".join(
        f'<figure><img src="{p}.png" alt="{p}"><figcaption>{html.escape(p)}</figcaption></figure>'
        for p in panels
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>sapiens2 demo</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}} figure{{display:inline-block;margin:6px}}
img{{image-rendering:pixelated;max-width:100%}} .note{{background:#fff6d5;padding:.6em 1em}}</style></head>
<body><h1>sapiens2 demo</h1>
<p class="note">These small demo models were trained on procedural synthetic figures only (see
<code>docs/synthetic.md</code>); they demonstrate the pipeline, not real-world accuracy. For real
images use the official checkpoints, e.g. <code>sapiens2 predict --task seg --model facebook/sapiens2-seg-1b IMAGES</code>.</p>
<p><img src="contact_sheet.png" alt="contact sheet"></p>
<p>Top row: predictions; bottom row (synthetic scenes): the exact labels.</p>
{imgs}
<pre>{html.escape(json.dumps(summary, indent=1))}</pre>
</body></html>
"""
