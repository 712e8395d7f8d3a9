"""Predictor API: task checks, person-box sources, batching, results and keypoint converters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fakes import ConstantDenseModel, PeakyPoseModel
from tests.conftest import small_pointmap_model

import sapiens2
from sapiens2.data.metadata import keypoints308
from sapiens2.inference import PosePredictor, Predictor, SegPredictor
from sapiens2.inference.export import coco_results
from sapiens2.inference.results import COCO17_NAMES, PoseResult, coco17_index, coco_wholebody_index


class CountingPose(PeakyPoseModel):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def forward(self, x):
        self.batches.append(x.shape[0])
        return super().forward(x)


def test_wrong_task_and_backbone_are_clear_errors():
    seg = sapiens2.create_model("sapiens2_tiny", task="seg")
    with pytest.raises(ValueError, match="is a seg model, but task 'pose'"):
        Predictor("pose", seg)
    with pytest.raises(ValueError, match="plain backbone"):
        Predictor("seg", sapiens2.create_model("sapiens2_tiny"))
    with pytest.raises(ValueError, match="unknown task"):
        Predictor("depth", seg)
    with pytest.raises(ValueError, match="mask_model must be a segmentation"):
        normal = ConstantDenseModel("normal", torch.ones(3, 16, 16))
        Predictor(
            "normal",
            normal,
            input_size=(16, 16),
            mask_model=Predictor("normal", normal, input_size=(16, 16)),
        )
    with pytest.raises(ValueError, match="mask model is a normal model"):
        Predictor("normal", normal, input_size=(16, 16), mask_model=normal)
    assert SegPredictor(seg).task == "seg"


def test_tiny_models_shapes_for_every_task():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)
    for task in ("seg", "normal", "albedo"):
        res = Predictor(
            task, sapiens2.create_model("sapiens2_tiny", task=task), input_size=(64, 48)
        ).predict(img)
        arr = {"seg": "labels", "normal": "normals", "albedo": "albedo"}[task]
        assert getattr(res, arr).shape[:2] == (40, 30)
    pm = sapiens2.create_model("sapiens2_tiny", task="pointmap")
    with pytest.raises(ValueError, match="requires 512x384"):
        Predictor("pointmap", pm, input_size=(256, 192))
    assert Predictor("pointmap", pm).input_size == (512, 384)


@pytest.mark.parametrize("task", ["seg", "normal", "pointmap", "albedo"])
def test_prepared_inputs_predict_the_same_as_images(task):
    """``prepare`` (run on the decoding threads by ``sapiens2 predict``) then ``predict`` gives
    exactly what ``predict`` on the images gives, also with batches of mixed image sizes."""
    torch.manual_seed(0)
    if task == "pointmap":  # its input size is fixed by the head: 64x48 here
        model, size = small_pointmap_model(), None
    else:
        model, size = sapiens2.create_model("sapiens2_tiny", task=task), (64, 48)
    predictor = Predictor(task, model, input_size=size, batch_size=2)
    assert predictor.input_size == (64, 48)
    rng = np.random.default_rng(0)
    images = [
        rng.integers(0, 255, (*hw, 3), dtype=np.uint8) for hw in [(40, 30), (50, 70), (40, 30)]
    ]
    direct = predictor.predict(images)
    prepared = [predictor.prepare(img) for img in images]
    assert all(p.input.shape[:2] == predictor.input_size for p in prepared)
    via = predictor.predict(prepared)
    field = {"seg": "labels", "normal": "normals", "pointmap": "points", "albedo": "albedo"}[task]
    for a, b, img in zip(direct, via, images, strict=True):
        assert getattr(a, field).shape[:2] == img.shape[:2]
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    single = predictor.predict(prepared[1])  # one image alone: compare with the same batch of one
    np.testing.assert_array_equal(
        getattr(single, field), getattr(predictor.predict(images[1]), field)
    )


def test_prepared_inputs_must_match_the_predictor():
    seg = Predictor("seg", sapiens2.create_model("sapiens2_tiny", task="seg"), input_size=(64, 48))
    normal = Predictor(
        "normal", sapiens2.create_model("sapiens2_tiny", task="normal"), input_size=(64, 48)
    )
    img = np.zeros((40, 30, 3), np.uint8)
    with pytest.raises(ValueError, match=r"prepared with a 64x48 stretch.*needs a 64x48 letterbox"):
        normal.predict(seg.prepare(img))
    small = Predictor("seg", seg.model, input_size=(32, 32))
    with pytest.raises(ValueError, match=r"prepared with a 32x32 stretch.*needs a 64x48 stretch"):
        seg.predict(small.prepare(img))
    pose = Predictor("pose", sapiens2.create_model("sapiens2_tiny", task="pose"))
    np.testing.assert_array_equal(pose.prepare(img), img)  # pose crops need the boxes first


def test_pose_crops_in_batches_of_at_most_batch_size_with_flip():
    model = CountingPose()
    pred = PosePredictor(model, input_size=(64, 48), batch_size=2)
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, (50, 40, 3), dtype=np.uint8) for _ in range(3)]
    boxes = [np.array([[0, 0, 20, 30], [5, 5, 39, 49], [1, 1, 10, 10]]), np.zeros((0, 4)), None]
    res = pred.predict(imgs, boxes=boxes)
    # image 0: 3 crops, 2 in the first forward (x2 flip), its third with image 2's whole-image
    # crop (image 1 has none): no forward holds more than batch_size crops
    assert model.batches == [4, 4]
    assert [r.num_people for r in res] == [3, 0, 1]
    assert res[0].keypoints.shape == (3, 308, 2) and res[0].scores.shape == (3, 308)
    np.testing.assert_array_equal(res[2].boxes, [[0, 0, 39, 49]])
    assert res[1].keypoints.shape == (0, 308, 2)
    single = pred.predict(imgs[0], boxes=boxes[0])
    assert isinstance(single, PoseResult)
    np.testing.assert_allclose(single.keypoints, res[0].keypoints, atol=1e-4)


def test_pose_boxes_from_mask_model_and_detector():
    logits = torch.zeros(29, 40, 40)
    logits[3, 2:12, 2:10] = 9.0
    logits[22, 20:38, 25:39] = 9.0
    seg = ConstantDenseModel("seg", logits)
    pred = PosePredictor(PeakyPoseModel(), input_size=(64, 48), mask_model=seg)
    img = np.zeros((40, 40, 3), np.uint8)
    boxes, scores = pred.person_boxes(img)
    np.testing.assert_array_equal(boxes, [[25, 20, 38, 37], [2, 2, 9, 11]])
    assert scores.tolist() == [1.0, 1.0]

    def detector(rgb):
        return np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], np.float32), np.array(
            [0.9, 0.8, 0.2]
        )

    pred = PosePredictor(PeakyPoseModel(), input_size=(64, 48), detector=detector)
    boxes, _scores = pred.person_boxes(img)  # NMS drops the overlap, threshold drops the 0.2 box
    np.testing.assert_array_equal(boxes, [[0, 0, 10, 10]])
    assert pred.predict(img).box_scores.tolist() == pytest.approx([0.9])


def test_predict_rejects_bad_inputs():
    pred = PosePredictor(PeakyPoseModel(), input_size=(64, 48))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        pred.predict(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        pred.predict(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="2 boxes entries for 1 images"):
        pred.predict([np.zeros((10, 10, 3), np.uint8)], boxes=[None, None])
    with pytest.raises(ValueError, match="masks are only"):
        pred.predict(np.zeros((10, 10, 3), np.uint8), masks=np.ones((10, 10)))


def test_keypoint_converters():
    meta = keypoints308()
    idx17 = coco17_index()
    assert [meta.names[i] for i in idx17] == list(COCO17_NAMES)
    idx133 = coco_wholebody_index()
    assert (idx133 >= 0).sum() == 55  # 17 body + 6 feet + 30 finger joints + 2 hand roots
    assert (idx133[23:91] == -1).all()  # no COCO face point exists in the 308 layout
    assert meta.names[idx133[91]] == "left_wrist" and meta.names[idx133[95]] == "left_thumb4"
    kp = np.arange(2 * 308 * 2, dtype=np.float32).reshape(2, 308, 2)
    sc = np.arange(2 * 308, dtype=np.float32).reshape(2, 308) + 1
    res = PoseResult(kp, sc, np.zeros((2, 4)), np.ones(2), (10, 10))
    k17, _s17 = res.to_coco17()
    np.testing.assert_array_equal(k17[:, 9], kp[:, meta.index("left_wrist")])
    k133, s133 = res.to_coco_wholebody()
    assert k133.shape == (2, 133, 2) and (s133[:, 23:91] == 0).all()
    np.testing.assert_array_equal(s133[:, 17], sc[:, meta.index("left_big_toe")])
    coco = coco_results(res, 7, "img", kpt_thr=0.0, layout="coco_wholebody133")
    assert len(coco) == 2 and coco[0]["image_id"] == 7 and len(coco[0]["keypoints"]) == 3 * 17
    assert coco[1]["foot_kpts"][:3] == [float(v) for v in (*k133[1, 17], s133[1, 17])]
    with pytest.raises(ValueError, match="unknown keypoint layout"):
        coco_results(res, 0, "img", layout="coco18")
