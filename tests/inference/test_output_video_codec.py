"""Output videos: H.264 through PyAV when it is installed, OpenCV's mp4v otherwise; every frame
is in the file either way."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from tests.conftest import video_frames

from sapiens2.errors import OutputError
from sapiens2.inference import writer as writer_mod
from sapiens2.inference.writer import _Video

HAVE_AV = importlib.util.find_spec("av") is not None


def _frames(n=5, size=(33, 47)):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (*size, 3), dtype=np.uint8) for _ in range(n)]


def test_without_pyav_auto_falls_back_to_mp4v(tmp_path, monkeypatch):
    monkeypatch.setattr(writer_mod, "have_pyav", lambda: False)
    video = _Video(tmp_path / "v.mp4", 5.0, (32, 48))
    assert video.codec == "mp4v"
    for f in _frames(size=(32, 48)):
        video.write(f)
    video.close()
    frames = video_frames(tmp_path / "v.mp4")
    assert len(frames) == 5 and frames[0].shape == (32, 48, 3)
    assert b"mp4v" in (tmp_path / "v.mp4").read_bytes()  # the MP4 sample entry of MPEG-4 part 2


def test_a_missing_frame_is_an_error(tmp_path, monkeypatch):
    video = _Video(tmp_path / "v.mp4", 5.0, (16, 16), codec="mp4v")
    video.write(_frames(1, (16, 16))[0])
    video.frames += 1  # pretend a frame was written that the file does not hold
    with pytest.raises(OutputError, match="holds 1 of the 2 frames"):
        video.close()
    with pytest.raises(ValueError, match="unknown video codec"):
        _Video(tmp_path / "w.mp4", 5.0, (16, 16), codec="vp9")


@pytest.mark.skipif(HAVE_AV, reason="PyAV is installed")
def test_h264_without_pyav_is_a_clear_error(tmp_path):
    with pytest.raises(OutputError, match=r"cannot write H\.264 video"):
        _Video(tmp_path / "v.mp4", 5.0, (16, 16), codec="h264")


@pytest.mark.skipif(not HAVE_AV, reason="PyAV (the video extra) is not installed")
def test_pyav_writes_h264_with_every_frame(tmp_path):
    import av

    video = _Video(tmp_path / "v.mp4", 5.0, (33, 47))  # odd sides: padded for 4:2:0
    assert video.codec in writer_mod.H264_ENCODERS
    frames = _frames()
    for f in frames:
        video.write(f)
    video.close()
    with av.open(str(tmp_path / "v.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        decoded = [fr.to_ndarray(format="rgb24") for fr in container.decode(stream)]
    assert len(decoded) == 5 and decoded[0].shape == (34, 48, 3)
    # lossy, but the picture is there: closer to its own frame than to the next one
    err = [np.abs(d[:33, :47].astype(int) - f).mean() for d, f in zip(decoded, frames, strict=True)]
    other = np.abs(decoded[0][:33, :47].astype(int) - frames[1]).mean()
    assert max(err) < other
