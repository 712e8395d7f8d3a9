"""Built-in person detector: RTMDet in pure PyTorch, equivalent to mmdet's RTMDet inference.

Typical use::

    from sapiens2.detect import load_detector, filter_person_boxes

    detector = load_detector("facebook/sapiens-pose-bbox-detector")  # or a .pth / .safetensors
    boxes, scores = detector(image_rgb)                              # (N, 4) xyxy, (N,)
    persons = filter_person_boxes(boxes, scores, image_rgb.shape[:2])  # score>0.3, NMS 0.3
"""

from sapiens2.detect.checkpoint import (
    HUB_FILENAME,
    HUB_REPO,
    DetectorCheckpointError,
    cached_detector_path,
    config_from_state_dict,
    load_detector,
    save_detector,
)
from sapiens2.detect.config import RTMDET_M, RTMDET_TINY, DetectorTestConfig, RTMDetConfig
from sapiens2.detect.detector import Detections, RTMDetDetector
from sapiens2.detect.model import RTMDet
from sapiens2.detect.protocol import (
    Detector,
    PersonBoxes,
    detect_person_boxes,
    filter_person_boxes,
    nms_plus_one,
)

__all__ = [
    "HUB_FILENAME",
    "HUB_REPO",
    "RTMDET_M",
    "RTMDET_TINY",
    "Detections",
    "Detector",
    "DetectorCheckpointError",
    "DetectorTestConfig",
    "PersonBoxes",
    "RTMDet",
    "RTMDetConfig",
    "RTMDetDetector",
    "cached_detector_path",
    "config_from_state_dict",
    "detect_person_boxes",
    "filter_person_boxes",
    "load_detector",
    "nms_plus_one",
    "save_detector",
]
