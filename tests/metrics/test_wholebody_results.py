"""A COCO-WholeBody results file written by ``sapiens2 predict``'s pose outputs, evaluated part by
part with pycocotools (as the WholeBody evaluators do: each part's field as the keypoints, that
part's sigmas), gives exactly our own keypoint AP/AR on the same file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests.metrics._coco_data import pycocotools_stats

from sapiens2.data.metadata import keypoints308
from sapiens2.inference.export import WHOLEBODY_PARTS
from sapiens2.inference.media import Frame, MediaItem
from sapiens2.inference.outputs import PoseOutputs, WriterOptions
from sapiens2.inference.results import PoseResult, coco_wholebody_index
from sapiens2.metrics.coco_keypoints import COCO17_SIGMAS, METRIC_NAMES, coco_keypoint_ap

pytest.importorskip("pycocotools")

H, W = 200, 160
GT_FIELDS = {"keypoints": "keypoints", "foot_kpts": "foot_kpts", "face_kpts": "face_kpts",
             "lefthand_kpts": "lefthand_kpts", "righthand_kpts": "righthand_kpts"}  # fmt: skip


def _sigmas() -> np.ndarray:
    """133 sigmas: COCO's body ones, the 308 layout's for the other mapped points, 0.025 for the
    rest (the test compares two evaluators on the same sigmas, not the sigmas)."""
    index = coco_wholebody_index()
    sig = np.where(index >= 0, keypoints308().sigmas[np.maximum(index, 0)], 0.025)
    sig[:17] = COCO17_SIGMAS
    return sig


def _dataset(rng: np.random.Generator):
    """COCO-WholeBody ground truth and one 308-point pose result per image (near the people,
    with a false positive now and then)."""
    index = coco_wholebody_index()
    images, anns, results = [], [], {}
    for image_id in (11, 23, 5, 40, 8):
        images.append({"id": image_id, "file_name": f"val/img{image_id}.png", "width": W, "height": H})  # fmt: skip
        kps, boxes = [], []
        for _ in range(int(rng.integers(0, 4))):
            w, h = rng.uniform(30, 120), rng.uniform(40, 150)
            x, y = rng.uniform(0, W - w), rng.uniform(0, H - h)
            xy = np.stack([x + rng.uniform(0, w, 133), y + rng.uniform(0, h, 133)], 1)
            v = rng.choice([0, 1, 2], 133, p=[0.2, 0.3, 0.5])
            crowd = int(rng.uniform() < 0.1)
            tri = np.concatenate([xy * (v[:, None] > 0), v[:, None]], 1)
            ann = {"id": len(anns) + 1, "image_id": image_id, "category_id": 1, "iscrowd": crowd,
                   "bbox": [x, y, w, h], "area": w * h * 0.7,
                   "num_keypoints": int((v > 0).sum())}  # fmt: skip
            for field, part in WHOLEBODY_PARTS.items():
                ann[field] = tri[part].ravel().tolist()
            anns.append(ann)
            if not crowd:
                kps.append(xy)
                boxes.append([x, y, x + w, y + h])
        if rng.uniform() < 0.5:  # a false positive
            kps.append(rng.uniform(0, [W, H], (133, 2)))
            boxes.append([0, 0, W - 1, H - 1])
        n = len(kps)
        kp308 = rng.uniform(0, [W, H], (n, 308, 2))
        for i, xy in enumerate(kps):
            have = index >= 0
            noise = rng.normal(0, rng.uniform(0.5, 6), (int(have.sum()), 2))
            kp308[i, index[have]] = xy[have] + noise
        results[image_id] = PoseResult(
            kp308.astype(np.float32), rng.uniform(0.2, 1.0, (n, 308)).astype(np.float32),
            np.array(boxes, np.float32).reshape(-1, 4), rng.uniform(0.5, 1, n).astype(np.float32),
            (H, W),
        )  # fmt: skip
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": 1, "name": "person"}]}  # fmt: skip
    return gt, results


def _write_results(gt: dict, results: dict, out: Path) -> list[dict]:
    """coco_results.json as ``sapiens2 predict --coco-gt gt --coco-layout coco_wholebody133``
    writes it (ids from the annotation file, by file name)."""
    ids = {Path(img["file_name"]).name: img["id"] for img in gt["images"]}
    outputs = PoseOutputs(WriterOptions(coco_layout="coco_wholebody133", image_ids=ids))
    for name in sorted(ids):  # not in id order: the ids must come from the file
        item = MediaItem(Path(f"/in/{name}"), "image", Path(name).stem)
        outputs.commit(Frame(item, item.name), results[ids[name]])
    outputs.close(out)
    return json.loads((out / "coco_results.json").read_text())


@pytest.mark.parametrize("seed", [0, 1])
def test_wholebody_results_file_pycocotools_per_part_equals_our_ap(tmp_path, seed):
    gt, results = _dataset(np.random.default_rng(seed))
    written = _write_results(gt, results, tmp_path)
    assert {r["image_id"] for r in written} <= {img["id"] for img in gt["images"]}
    sigmas = _sigmas()
    aps = {}
    for field, part in WHOLEBODY_PARTS.items():
        # per part, as the WholeBody evaluators: that part's labelled points count
        part_gt = json.loads(json.dumps(gt))
        for ann in part_gt["annotations"]:
            ann["num_keypoints"] = int(np.count_nonzero(np.reshape(ann[field], (-1, 3))[:, 2]))
        ours = coco_keypoint_ap(part_gt, written, sigmas[part], kpt_key=field)
        # pycocotools reads `keypoints`: the part's lists under that name
        for ann in part_gt["annotations"]:
            ann["keypoints"] = ann[field]
        renamed = [{**r, "keypoints": r[field]} for r in written]
        theirs = pycocotools_stats(part_gt, renamed, sigmas[part])
        np.testing.assert_allclose([ours[k] for k in METRIC_NAMES], theirs, atol=1e-12, err_msg=field)  # fmt: skip
        aps[field] = ours["AP"]
    assert aps["keypoints"] > 0.1 and aps["foot_kpts"] > 0.1, aps  # near the truth: real numbers
    assert aps["face_kpts"] <= 0.0  # no face point is predicted (0, 0)
