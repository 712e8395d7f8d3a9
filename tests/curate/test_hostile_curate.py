"""Curation with hostile inputs (issue 24): special files never opened, the output never the
input, one run per output folder, huge images dropped before decoding."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest
from tests.hostile import fifo, huge_png

from sapiens2.curate.config import ReadConfig
from sapiens2.curate.pipeline import Pipeline
from sapiens2.curate.sources import Unit, iter_unit, list_units
from sapiens2.curate.validate import validate_item
from sapiens2.data.shards import ShardWriter
from sapiens2.errors import OutputError
from sapiens2.outdir import OutputLock


def _png(tmp_path, name):
    path = tmp_path / name
    cv2.imwrite(str(path), np.full((40, 30, 3), 90, np.uint8))
    return path


def _finishes(fn, seconds=20.0):
    """Run ``fn`` on a daemon thread; its result, or a failure if it blocks (e.g. on a FIFO)."""
    out = []
    thread = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "blocked (reading a FIFO or a device?)"
    return out[0]


def test_fifos_and_devices_are_never_opened(tmp_path):
    pool = tmp_path / "pool"
    pool.mkdir()
    _png(pool, "a.png")
    fifo(pool / "pipe.jpg")
    (pool / "zero.png").symlink_to("/dev/zero")
    units = list_units(str(pool))
    assert [u.uri.rsplit("/", 1)[-1] for u in units] == ["a.png"]
    # named one by one in a URL list, they become drop reasons without being opened
    listing = tmp_path / "list.txt"
    listing.write_text(f"{pool / 'pipe.jpg'}\n{pool / 'zero.png'}\n{pool / 'a.png'}\n")
    items = _finishes(lambda: [i for u in list_units(str(listing)) for i in iter_unit(u, 1 << 20)])
    assert [i.error for i in items] == ["not_regular_file", "not_regular_file", ""]


def test_output_folder_is_never_the_input(tmp_path):
    pool = tmp_path / "pool"
    with ShardWriter(pool, "train", samples_per_shard=4) as w:  # a shard named like an output
        w.write("k0", {"png": cv2.imencode(".png", np.zeros((40, 30, 3), np.uint8))[1].tobytes()})
    shard = pool / "train-000000.tar"
    before = shard.read_bytes()
    with pytest.raises(OutputError, match="holds the input"):
        Pipeline(str(pool), pool).run()
    with pytest.raises(OutputError, match="is inside the input folder"):
        Pipeline(str(pool), pool / "curated").run()
    listing = tmp_path / "list.txt"
    listing.write_text(f"{shard}\n")
    with pytest.raises(OutputError, match="holds the input"):
        Pipeline(str(listing), pool).run()
    assert shard.read_bytes() == before and sorted(p.name for p in pool.iterdir()) == [
        "train-000000.tar",
        "train-index.json",
    ]


def test_a_second_run_into_one_output_is_refused(tmp_path):
    pool = tmp_path / "pool"
    pool.mkdir()
    _png(pool, "a.png")
    out = tmp_path / "out"
    out.mkdir()
    with OutputLock(out, "curate"), pytest.raises(OutputError, match="in use by another run"):
        Pipeline(str(pool), out).run()


def test_images_over_the_pixel_limit_are_dropped_before_decoding(tmp_path, monkeypatch):
    huge = huge_png(tmp_path / "huge.png")
    (unit,) = list_units(str(huge))
    (item,) = iter_unit(unit, 1 << 20)
    monkeypatch.setattr(cv2, "imdecode", lambda *a: pytest.fail("decoded a refused image"))
    verdict, rgb = validate_item(item, ReadConfig())
    assert verdict.drop == "too_many_pixels" and rgb is None
    monkeypatch.undo()
    # without our limit, OpenCV's own (2**30 pixels) still refuses a 40000 x 30000 header
    huge_png(huge, 40000, 30000)
    (item,) = iter_unit(Unit(str(huge), "file"), 1 << 20)
    assert validate_item(item, ReadConfig(max_pixels=None))[0].drop == "unreadable"
