"""The offline demo: six small task models trained on synthetic humans, shipped in the package.

``run_demo`` renders a synthetic scene (or takes your image), runs segmentation, pose, normals,
pointmap, albedo and matting with the bundled models, counts the people, and writes a contact sheet (with a
segmentation legend and a depth colour bar), the figures at full size, ``summary.json`` and an HTML
page. The demo models (arch ``sapiens2_demo``, 256x192 inputs) were trained with
``tools/train_demo_models.py`` on procedural figures only: they show the pipeline end to end, not
real-world accuracy (``docs/demo.md`` has their held-out numbers). For real images use the official
checkpoints (``sapiens2 predict --model facebook/sapiens2-seg-1b ...``).
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

DEMO_TASKS = ("seg", "pose", "normal", "pointmap", "albedo", "matting")
# The matting panel composites the predicted person over this colour (RGB).
MATTING_BACKDROP = (40, 160, 90)
DEMO_INPUT = (256, 192)
# The demo scene is rendered larger than the models' input, for crisp pictures (H, W).
DEMO_SCENE = (576, 432)
# A person counts when at least this share of the image shows them (ground truth of the count).
MIN_VISIBLE_PERSON = 0.005
# Segmentation classes of a head: eyeglass, face/neck, hair, lips, teeth, tongue.
HEAD_CLASSES = (2, 3, 4, 24, 25, 26, 27, 28)
PHOTO_NOTICE = (
    "the demo models were trained on synthetic figures only and do not work on photos; for real "
    "images run the official checkpoints, e.g. `sapiens2 predict --task seg --model "
    "facebook/sapiens2-seg-1b PHOTO` (downloads the model from the Hugging Face hub)"
)
OFFICIAL_MODELS = "https://huggingface.co/models?search=facebook/sapiens2"


def demo_model_path(task: str, model_dir: str | Path | None = None) -> Path:
    """The bundled demo checkpoint of ``task`` (official layout, bfloat16), or ``<task>.safetensors``
    in ``model_dir``."""
    if task not in DEMO_TASKS:
        raise ValueError(f"no demo model for task {task!r}; demo tasks: {', '.join(DEMO_TASKS)}")
    if model_dir is not None:
        path = Path(model_dir) / f"{task}.safetensors"
    else:
        path = Path(str(resources.files("sapiens2.assets.demo").joinpath(f"{task}.safetensors")))
    if not path.is_file():
        raise FileNotFoundError(f"the demo model {path} is missing")
    return path


@dataclass
class DemoResult:
    sheet: Path
    page: Path
    summary: dict


def visible_people(instance: np.ndarray, min_share: float = MIN_VISIBLE_PERSON) -> int:
    """People of a synthetic scene's instance map showing on at least ``min_share`` of the image."""
    inst = np.asarray(instance)
    areas = np.bincount(inst[inst >= 0].ravel().astype(np.int64)) / inst.size
    return int((areas >= min_share).sum())


def find_people(
    labels: np.ndarray, depth: np.ndarray, *, max_jump: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """People in a segmentation and a depth map: regions of the person mask that no depth step
    crosses (see :func:`~sapiens2.inference.boxes.people_from_depth`) and that hold a head
    (a detached limb or a fragment is not a person).

    Returns:
        ``(instances, boxes)``: ``(H, W)`` int32 person index 1..N (0 elsewhere) and ``(N, 4)``
        float32 inclusive xyxy boxes.
    """
    from sapiens2.inference.boxes import people_from_depth

    kw = {"max_jump": max_jump, "grid": 256}
    regions, _ = people_from_depth(labels > 0, depth, min_area_fraction=0.002, **kw)
    heads, head_boxes = people_from_depth(
        np.isin(labels, HEAD_CLASSES), depth, min_area_fraction=0.0005, **kw
    )
    keep: list[int] = []
    for j in range(1, len(head_boxes) + 1):
        under = regions[heads == j]
        under = under[under > 0]
        if len(under):
            r = int(np.bincount(under).argmax())
            if r not in keep:
                keep.append(r)
    instances = np.zeros_like(regions)
    boxes = []
    for i, r in enumerate(keep, start=1):
        instances[regions == r] = i
        ys, xs = np.nonzero(regions == r)
        boxes.append([xs.min(), ys.min(), xs.max(), ys.max()])
    return instances, np.asarray(boxes, np.float32).reshape(-1, 4)


def _label(panel: np.ndarray, text: str) -> np.ndarray:
    bar = np.full((26, panel.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (4, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (20, 20, 20), 1, cv2.LINE_AA)
    return np.concatenate([bar, panel], axis=0)


def _row(panels: list[tuple[str, np.ndarray]]) -> np.ndarray:
    h = panels[0][1].shape[0]
    gap = np.full((h + 26, 6, 3), 255, np.uint8)
    parts = []
    for name, p in panels:
        parts += [_label(p, name), gap]
    return np.concatenate(parts[:-1], axis=1)


def _pad_to_width(picture: np.ndarray, width: int) -> np.ndarray:
    if picture.shape[1] >= width:
        return picture[:, :width]
    pad = np.full((picture.shape[0], width - picture.shape[1], 3), 255, np.uint8)
    return np.concatenate([picture, pad], axis=1)


def _stack(rows: list[np.ndarray]) -> np.ndarray:
    width = max(r.shape[1] for r in rows)
    gap = np.full((8, width, 3), 255, np.uint8)
    parts = []
    for r in rows:
        parts += [_pad_to_width(r, width), gap]
    return np.concatenate(parts[:-1], axis=0)


def synthetic_scene(seed: int = 0, size: tuple[int, int] = DEMO_SCENE):
    """A rendered synthetic scene with its exact labels (see ``sapiens2.data.synth``): the full
    distribution of the demo models' training data (1 to 3 people)."""
    from sapiens2.data.synth.render import SynthConfig, render_sample

    return render_sample(np.random.default_rng(seed), SynthConfig(*size))


@dataclass
class DemoPredictions:
    labels: np.ndarray
    keypoints: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    normals: np.ndarray
    depth: np.ndarray
    albedo: np.ndarray
    alpha: np.ndarray
    foreground: np.ndarray


def predict_scene(image: np.ndarray, device="cpu", model_dir=None) -> DemoPredictions:
    """All six demo models on ``image`` (RGB uint8): the dense tasks masked by the predicted
    people, pose on the people :func:`find_people` finds."""
    from sapiens2.inference.predictor import Predictor

    def load(task: str, **kw) -> Predictor:
        path = demo_model_path(task, model_dir)
        return Predictor(task, path, device=device, dtype="fp32", **kw)

    labels = load("seg", input_size=DEMO_INPUT).predict(image).labels
    person = labels > 0
    depth = load("pointmap").predict(image, masks=person).points[..., 2]
    _, boxes = find_people(labels, depth)
    kp = load("pose", input_size=DEMO_INPUT).predict(image, boxes=boxes)
    normals = load("normal", input_size=DEMO_INPUT).predict(image, masks=person).normals
    albedo = load("albedo", input_size=DEMO_INPUT).predict(image, masks=person).albedo
    matte = load("matting", input_size=DEMO_INPUT).predict(image)
    return DemoPredictions(
        labels, kp.keypoints, kp.scores, boxes, normals, depth, albedo, matte.alpha,
        matte.foreground,
    )  # fmt: skip


def run_demo(
    out: str | Path,
    *,
    image: np.ndarray | None = None,
    seed: int = 0,
    device: str = "cpu",
    model_dir: str | Path | None = None,
) -> DemoResult:
    """Runs the six demo models and writes ``contact_sheet.png``, ``index.html``,
    ``summary.json`` and the per-task pictures into ``out``.

    Args:
        out: output folder.
        image: an RGB uint8 image to use instead of a synthetic scene (no ground-truth row then;
            the demo models know only synthetic figures).
        seed: which synthetic scene to render.
        device: where to run the models.
        model_dir: a folder of ``<task>.safetensors`` demo models to use instead of the bundled ones.
    """
    from sapiens2.viz.dense import (
        DepthRange,
        albedo_to_rgb,
        depth_colorbar,
        depth_to_rgb,
        normals_to_rgb,
    )
    from sapiens2.viz.matting import composite
    from sapiens2.viz.pose import draw_pose
    from sapiens2.viz.seg import seg_legend, seg_overlay

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scene = None
    if image is None:
        scene = synthetic_scene(seed)
        image = scene.image
    p = predict_scene(image, device=device, model_dir=model_dir)
    person = p.labels > 0
    bounds = DepthRange().update(p.depth, person)
    if scene is not None:
        bounds.update(scene.pointmap[..., 2], scene.mask > 0)
    h = image.shape[0]
    radius = max(2, round(h / 160))
    pred = [
        ("input", image),
        ("segmentation", seg_overlay(image, p.labels)),
        (
            f"pose ({len(p.boxes)} people)",
            draw_pose(image, p.keypoints, p.scores, kpt_thr=0.3, radius=radius, boxes=p.boxes),
        ),
        ("normals", normals_to_rgb(p.normals, person)),
        ("depth", depth_to_rgb(p.depth, person, bounds)),
        ("albedo", albedo_to_rgb(p.albedo, person)),
        ("matting", composite(p.foreground, p.alpha, MATTING_BACKDROP)),
    ]
    rows = [_row(pred)]
    all_labels = [p.labels]
    if scene is not None:
        vis = (scene.keypoints[..., 2] > 0).astype(np.float32)
        gt = [
            ("ground truth", image),
            ("segmentation", seg_overlay(image, scene.seg)),
            (
                f"pose ({visible_people(scene.instance)} people)",
                draw_pose(image, scene.keypoints[..., :2], vis, kpt_thr=0.5, radius=radius),
            ),
            ("normals", normals_to_rgb(scene.normal, scene.mask > 0)),
            ("depth", depth_to_rgb(scene.pointmap[..., 2], scene.mask > 0, bounds)),
            ("albedo", albedo_to_rgb(scene.albedo.astype(np.float32) / 255, scene.mask > 0)),
            ("matting", composite(scene.foreground, scene.alpha, MATTING_BACKDROP)),
        ]
        rows.append(_row(gt))
        all_labels.append(scene.seg)
    legend_labels = np.concatenate([lab.ravel() for lab in all_labels])
    keys = [_label(seg_legend(legend_labels, 220), "segmentation classes")]
    if bounds.near is not None:
        keys.append(_label(depth_colorbar(bounds, 420, 48), "depth (metres)"))
    rows.append(_row_of_keys(keys))
    sheet = _stack(rows)
    sheet_path = out / "contact_sheet.png"
    cv2.imwrite(str(sheet_path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    figures = []
    for name, panel in pred[1:]:
        fname = name.split(" ")[0] + ".png"
        cv2.imwrite(str(out / fname), cv2.cvtColor(panel, cv2.COLOR_RGB2BGR))
        figures.append((fname, name))
    depth_fg = p.depth[person & np.isfinite(p.depth)]
    summary = {
        "image_size": list(image.shape[:2]),
        "people_found": len(p.boxes),
        "people_in_scene": visible_people(scene.instance) if scene is not None else None,
        "person_pixels": int(person.sum()),
        "median_depth_m": round(float(np.median(depth_fg)), 2) if depth_fg.size else None,
        "source": f"synthetic scene seed {seed}" if scene is not None else "user image",
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    page = out / "index.html"
    page.write_text(_page(summary, figures, photo=scene is None))
    return DemoResult(sheet_path, page, summary)


def _row_of_keys(keys: list[np.ndarray]) -> np.ndarray:
    h = max(k.shape[0] for k in keys)
    parts = []
    for k in keys:
        pad = np.full((h - k.shape[0], k.shape[1], 3), 255, np.uint8)
        parts += [np.concatenate([k, pad], axis=0), np.full((h, 24, 3), 255, np.uint8)]
    return np.concatenate(parts[:-1], axis=1)


def _page(summary: dict, figures: list[tuple[str, str]], photo: bool) -> str:
    figs = "\n".join(
        f'<figure><a href="{f}"><img src="{f}" alt="{html.escape(n)}"></a>'
        f"<figcaption>{html.escape(n)}</figcaption></figure>"
        for f, n in figures
    )
    rows = "\n".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in summary.items()
    )
    warn = f'<p class="warn">{html.escape(PHOTO_NOTICE)}</p>' if photo else ""
    gt = "" if photo else "<p>Top row: predictions; second row: the scene's exact labels.</p>"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>sapiens2 demo</title>
<style>body{{font-family:sans-serif;margin:2em}} figure{{display:inline-block;margin:6px;vertical-align:top}}
.sheet{{overflow:auto;border:1px solid #ddd}} .sheet img{{max-width:none;display:block}}
.note{{background:#fff6d5;padding:.6em 1em;max-width:60em}} .warn{{background:#ffd9d9;padding:.6em 1em;max-width:60em}}
td,th{{text-align:left;padding:2px 12px 2px 0}}</style></head>
<body><h1>sapiens2 demo</h1>
{warn}
<p class="note">These small demo models were trained on procedural synthetic figures only; they
show the pipeline end to end, not real-world accuracy. For real images use the
<a href="{OFFICIAL_MODELS}">official Sapiens2 checkpoints</a>, e.g.
<code>sapiens2 predict --task seg --model facebook/sapiens2-seg-1b IMAGES</code>.</p>
{gt}
<div class="sheet"><a href="contact_sheet.png"><img src="contact_sheet.png" alt="contact sheet"></a></div>
<p>Each figure at full size (click to open it alone):</p>
{figs}
<h2>Summary</h2>
<table>{rows}</table>
<p>Machine-readable: <a href="summary.json">summary.json</a>.</p>
</body></html>
"""
