"""Top-down crops: aspect fix, batching all people, and the exact mapping back to the image."""

from __future__ import annotations

import numpy as np

from sapiens2.data.geometry import transform_points, udp_warp_matrix
from sapiens2.inference.topdown import crop_people, keypoints_to_image


def test_center_scale_padding_and_aspect_fix():
    boxes = np.array([[10, 20, 110, 220], [0, 0, 300, 100]], np.float32)  # tall, wide
    crops, center, scale = crop_people(np.zeros((300, 400, 3), np.uint8), boxes, (256, 192))
    assert crops.shape == (2, 256, 192, 3) and crops.dtype == np.uint8
    np.testing.assert_allclose(center, [[60, 120], [150, 50]])
    # padding 1.25, then the short side grows to aspect 3:4
    np.testing.assert_allclose(scale[0], [250 * 0.75, 250])
    np.testing.assert_allclose(scale[1], [375, 375 / 0.75])


def test_heatmap_points_map_back_exactly_through_the_warp():
    """Heatmap pixel u decodes to u / (W_hm - 1) * W_in and maps back to the image point that the
    UDP warp sends to crop pixel u * (W_in - 1) / (W_hm - 1): exact inverse (to float64 rounding)."""
    rng = np.random.default_rng(0)
    input_hw, hm_hw = (1024, 768), (256, 192)
    center, scale = np.array([[321.5, 222.25]]), np.array([[300.0, 400.0]])
    u = np.stack([rng.uniform(0, 191, 50), rng.uniform(0, 255, 50)], axis=1)
    decoded = u / [hm_hw[1] - 1, hm_hw[0] - 1] * [input_hw[1], input_hw[0]]
    image_pts = keypoints_to_image(decoded[None], center, scale, input_hw)[0].astype(np.float64)
    matrix = udp_warp_matrix(center[0], scale[0], 0.0, input_hw)
    crop_pts = transform_points(image_pts, matrix)
    expected = u * [(input_hw[1] - 1) / (hm_hw[1] - 1), (input_hw[0] - 1) / (hm_hw[0] - 1)]
    np.testing.assert_allclose(
        crop_pts, expected, atol=2e-4
    )  # float32 output of keypoints_to_image


def test_pixels_in_crops_map_back_to_their_image_pixels():
    """Bright dots drawn in the image are found in every person crop (argmax of the crop, then the
    crop-pixel -> image mapping) at their true image position (to the crop's pixel quantisation)."""
    image = np.zeros((120, 90, 3), np.uint8)
    dots = np.array([[30, 40], [55, 80], [20, 95]])
    for x, y in dots:
        image[y, x] = 255
    boxes = np.array([[10, 30, 60, 100], [0, 10, 80, 115]], np.float32)
    input_hw = (256, 192)
    crops, center, scale = crop_people(image, boxes, input_hw)
    for i in range(len(boxes)):
        matrix = udp_warp_matrix(center[i], scale[i], 0.0, input_hw)
        step = scale[i] / [input_hw[1] - 1, input_hw[0] - 1]  # image pixels per crop pixel
        for dot in dots:
            target = transform_points(dot.astype(np.float64), matrix)
            x0, y0 = np.round(target).astype(int)
            win = crops[i, max(y0 - 3, 0) : y0 + 4, max(x0 - 3, 0) : x0 + 4, 0].astype(np.float64)
            ys, xs = np.mgrid[max(y0 - 3, 0) : y0 + 4, max(x0 - 3, 0) : x0 + 4]
            peak = np.array([(win * xs).sum(), (win * ys).sum()]) / win.sum()  # intensity centroid
            # crop pixel -> "decoded" input coordinates -> image (the official back-mapping)
            decoded = peak * [input_hw[1] / (input_hw[1] - 1), input_hw[0] / (input_hw[0] - 1)]
            back = keypoints_to_image(
                decoded[None, None], center[i : i + 1], scale[i : i + 1], input_hw
            )[0, 0]
            assert np.all(np.abs(back - dot) < 0.25 * np.maximum(step, 1)), (i, dot, back)
