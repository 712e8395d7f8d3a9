import pickle

import cv2
import numpy as np
import pytest

import sapiens2
from sapiens2.curate.config import QualityConfig
from sapiens2.curate.embed import BackboneEmbedder
from sapiens2.curate.person import SegmentationDetector, person_verdict
from sapiens2.curate.phash import hamming, hash_bytes, phash64
from sapiens2.curate.quality import QualityCheck, builtin_checks, score_image
from sapiens2.data.synth.render import SynthConfig, render_sample


@pytest.fixture(scope="module")
def scene():
    return render_sample(np.random.default_rng(3), SynthConfig(160, 128, people_max=1))


def test_phash_near_copies_close_distinct_far(scene):
    img = scene.image
    jpg = cv2.imdecode(
        cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])[1], cv2.IMREAD_UNCHANGED
    )
    h0 = phash64(img)
    assert hamming(h0, phash64(jpg)) <= 2
    assert hamming(h0, phash64(cv2.resize(img, (100, 125)))) <= 4
    other = render_sample(np.random.default_rng(4), SynthConfig(160, 128, people_max=1)).image
    assert hamming(h0, phash64(other)) > 10
    assert hamming(h0, phash64(img[:, ::-1])) > 10
    # byte layout used for FAISS agrees with the integer hamming distance
    a, b = hash_bytes(np.array([h0, phash64(other)]))
    assert int(np.unpackbits(a ^ b).sum()) == hamming(h0, phash64(other))


def test_quality_scorers_flag_what_they_should(scene):
    checks = builtin_checks(QualityConfig())
    img = scene.image
    scores, drop = score_image(img, checks)
    assert drop == "", scores
    assert score_image(cv2.GaussianBlur(img, (0, 0), 6), checks)[1] == "low_sharpness"
    assert (
        score_image(np.clip(img.astype(int) * 3 + 120, 0, 255).astype(np.uint8), checks)[1]
        == "high_clipped"
    )
    dark = (img // 8).astype(np.uint8) + 5
    assert score_image(dark, checks)[1] == "low_brightness"
    txt = img.copy()
    for r in range(5):
        y = 22 + 29 * r
        for colour, thick in (((255, 255, 255), 3), ((0, 0, 0), 1)):  # outlined caption text
            cv2.putText(
                txt,
                "SALE 50% OFF",
                (6, y),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.4,
                colour,
                thick,
                cv2.LINE_AA,
            )
    assert score_image(txt, [c for c in checks if c.scorer.name == "text"])[1] == "high_text"
    assert builtin_checks(QualityConfig(None, None, None, None, None)) == []


def test_custom_scorer_plugs_in():
    class Redness:
        name = "red"

        def __call__(self, rgb):
            return float(rgb[..., 0].mean())

    check = QualityCheck(Redness(), low=50)
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 200
    assert score_image(red, [check]) == ({"red": 200.0}, "")
    assert score_image(red * 0, [check])[1] == "low_red"


def test_person_verdict_short_side_rule():
    def det(_):
        return np.array(
            [[0, 0, 99, 49], [10, 10, 29, 200], [0, 0, 500, 500]], np.float32
        ), np.array([0.9, 0.8, 0.1])

    v = person_verdict(det, np.zeros((4, 4, 3), np.uint8), 50)
    assert (v.drop, v.people, v.max_short_side) == (
        "",
        1,
        50.0,
    )  # 100x50 box; the 0.1 box is ignored
    assert person_verdict(det, np.zeros((4, 4, 3), np.uint8), 51).drop == "small_person"
    empty = person_verdict(
        lambda _: (np.zeros((0, 4)), np.zeros(0)), np.zeros((4, 4, 3), np.uint8), 1
    )
    assert empty.drop == "no_person"


def test_segmentation_detector_finds_the_synthetic_person(scene):
    det = SegmentationDetector("demo:seg", input_size=(160, 128))
    boxes, scores = det(scene.image)
    ys, xs = np.nonzero(scene.mask)
    gt = np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float32)
    b = boxes[0]
    inter = max(0, min(b[2], gt[2]) - max(b[0], gt[0])) * max(
        0, min(b[3], gt[3]) - max(b[1], gt[1])
    )
    union = (b[2] - b[0]) * (b[3] - b[1]) + (gt[2] - gt[0]) * (gt[3] - gt[1]) - inter
    assert inter / union > 0.5, (b, gt)
    assert np.all(scores == 1)
    clone = pickle.loads(pickle.dumps(det))  # shipped to workers without the model
    assert clone._predictor is None and det._predictor is not None


def test_backbone_embedder_cls_and_mean():
    img = render_sample(np.random.default_rng(0), SynthConfig(160, 128, people_max=1)).image
    cls = BackboneEmbedder("demo:seg", "cls", (160, 128))
    mean = BackboneEmbedder("demo:seg", "mean", (160, 128))
    a, b = cls(img), mean(img)
    width = sapiens2.load_model("demo:seg").arch.embed_dim
    assert a.shape == b.shape == (width,) and a.dtype == np.float32
    assert abs(np.linalg.norm(a) - 1) < 1e-5 and abs(np.linalg.norm(b) - 1) < 1e-5
    assert not np.allclose(a, b)
    assert np.array_equal(a, cls(img))
    clone = pickle.loads(pickle.dumps(cls))
    assert clone._backbone is None and np.array_equal(clone(img), a)
    with pytest.raises(ValueError, match="pool must be"):
        BackboneEmbedder("demo:seg", "max")
