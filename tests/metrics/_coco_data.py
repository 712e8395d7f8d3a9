"""Random COCO keypoint ground truth / results for the AP parity tests, and a pycocotools runner."""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np


def random_coco(
    rng: np.random.Generator,
    num_keypoints: int,
    num_images: int = 12,
    categories=(1,),
    id0=False,
    noise=(0.002, 0.12),
):
    """A randomized ground truth dict and results list exercising every COCOeval branch."""
    images = [
        {"id": int(i), "width": 640, "height": 480}
        for i in rng.permutation(np.arange(1, num_images + 1) * 7)
    ]
    anns, results = [], []
    ann_id = 0 if id0 else 1
    for img in images:
        kind = rng.integers(0, 6)
        n_gt = 0 if kind == 0 else int(rng.integers(1, 7))
        gts = []
        for _ in range(n_gt):
            side = float(np.exp(rng.uniform(np.log(15), np.log(300))))  # small .. large
            w, h = side * rng.uniform(0.6, 1.4), side * rng.uniform(0.6, 1.4)
            x, y = rng.uniform(0, 400), rng.uniform(0, 300)
            kx = x + rng.uniform(0, w, num_keypoints)
            ky = y + rng.uniform(0, h, num_keypoints)
            v = rng.choice([0, 1, 2], num_keypoints, p=[0.3, 0.2, 0.5])
            mode = rng.integers(0, 10)
            if mode == 0:
                v[:] = 0  # nothing labelled ...
            crowd = int(mode == 1)
            nk = int(np.count_nonzero(v))
            if mode == 2:
                nk = 3  # ... or num_keypoints inconsistent with v: OKS falls back to the bbox rule
                v[:] = 0
            kp = np.stack([kx, ky, v], 1)
            kp[v == 0, :2] = 0
            ann = {
                "id": ann_id, "image_id": img["id"], "category_id": int(rng.choice(categories)),
                "keypoints": kp.ravel().tolist(), "num_keypoints": nk, "area": float(w * h * rng.uniform(0.5, 1)),
                "bbox": [x, y, w, h], "iscrowd": crowd,
            }  # fmt: skip
            ann_id += 1
            anns.append(ann)
            gts.append((kx, ky, w, h, ann["category_id"]))
        n_dt = 0 if kind == 1 else int(rng.integers(0, 26))
        for j in range(n_dt):
            if gts and rng.uniform() < 0.8:
                kx, ky, w, h, cat = gts[j % len(gts)]
                scale = rng.uniform(*noise) * np.sqrt(w * h)
                dx = kx + rng.normal(0, scale, num_keypoints)
                dy = ky + rng.normal(0, scale, num_keypoints)
            else:
                cat = int(rng.choice(categories))
                dx = rng.uniform(0, 640, num_keypoints) * rng.uniform(0.05, 1)
                dy = rng.uniform(0, 480, num_keypoints) * rng.uniform(0.05, 1)
            score = float(np.round(rng.uniform(), 1 if rng.uniform() < 0.3 else 6))  # some ties
            kp = np.stack([dx, dy, rng.uniform(0, 1, num_keypoints)], 1)
            results.append(
                {
                    "image_id": img["id"],
                    "category_id": cat,
                    "keypoints": kp.ravel().tolist(),
                    "score": score,
                }
            )
    cats = [
        {"id": c, "name": f"c{c}", "keypoints": [str(i) for i in range(num_keypoints)]}
        for c in categories
    ]
    gt = {"images": images, "annotations": anns, "categories": cats}
    return gt, results


def pycocotools_stats(gt: dict, results: list[dict], sigmas) -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        ev = COCOeval(coco_gt, coco_dt, "keypoints")
        ev.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats)
