import io
import tarfile

import cv2
import numpy as np
import pytest

from sapiens2.curate.config import ReadConfig
from sapiens2.curate.sources import Item, Unit, iter_unit, list_units, read_item
from sapiens2.curate.validate import check_size, validate_item


def _png(h, w, value=100):
    img = np.full((h, w, 3), value, np.uint8)
    img[: h // 2] = 200
    return cv2.imencode(".png", img)[1].tobytes()


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(_png(40, 30))
    (tmp_path / "b.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "notes.md").write_text("ignored")
    with tarfile.open(tmp_path / "s.tar", "w") as tar:
        for name, data in (
            ("m1.png", _png(20, 20, 10)),
            ("readme.txt", b"hi"),
            ("d/m2.png", _png(50, 10)),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return tmp_path


def test_folder_listing_is_sorted_and_expands_tars_in_workers(tree):
    units = list_units(str(tree))
    assert [(u.uri.rsplit("/", 1)[-1], u.kind) for u in units] == [
        ("x.png", "file"),
        ("b.jpg", "file"),
        ("s.tar", "tar"),
    ]
    items = list(iter_unit(units[2], 1 << 20))
    assert [i.uid.split("#")[1] for i in items] == ["m1.png", "d/m2.png"]
    for it in items:  # positional re-read gives the same bytes
        assert read_item(it.uri, it.member, it.offset, it.size) == it.data


def test_url_list_glob_and_single_file(tree):
    lst = tree / "list.txt"
    lst.write_text(f"# pool\n\nfile://{tree}/a/x.png\n{tree}/s.tar\n")
    assert [u.kind for u in list_units(str(lst))] == ["file", "tar"]
    item = next(iter_unit(list_units(str(lst))[0], 1 << 20))
    assert item.data == (tree / "a" / "x.png").read_bytes()
    assert [u.kind for u in list_units(str(tree / "*.tar"))] == ["tar"]
    assert len(list_units(str(tree / "b.jpg"))) == 1
    lst.write_text("foo.doc\n")
    with pytest.raises(ValueError, match=r"list\.txt line 1: 'foo\.doc'"):
        list_units(str(lst))
    with pytest.raises(FileNotFoundError, match="missing"):
        list_units(str(tree / "missing"))


def test_memory_filesystem():
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/pool/p.png", _png(30, 30))
    (unit,) = list_units("memory://pool")
    assert unit.uri.startswith("memory://") and unit.uri.endswith("/pool/p.png")
    assert next(iter_unit(unit, 1 << 20)).data == _png(30, 30)


def test_read_errors_become_drop_reasons(tree):
    assert next(iter_unit(Unit(str(tree / "gone.png"), "file"), 100)).error == "fetch_error"
    assert next(iter_unit(Unit(str(tree / "a" / "x.png"), "file"), 10)).error == "too_large"
    (tree / "bad.tar").write_bytes(b"x" * 700)
    assert next(iter_unit(Unit(str(tree / "bad.tar"), "tar"), 1 << 20)).error == "unreadable_tar"


def test_validate_reasons():
    cfg = ReadConfig(min_side=16, max_aspect=3.0)
    ok = Item("u", "u", "", -1, 0, _png(40, 30))
    v, rgb = validate_item(ok, cfg)
    assert v.drop == "" and (v.height, v.width) == (40, 30) and rgb.shape == (40, 30, 3)
    assert len(v.sha256) == 64 and v.phash != 0
    assert validate_item(Item("u", "u", "", -1, 0, b"junk"), cfg)[0].drop == "unreadable"
    assert validate_item(Item("u", "u", "", -1, 0, b""), cfg)[0].drop == "unreadable"
    assert validate_item(Item("u", "u", "", -1, 0, _png(10, 30)), cfg)[0].drop == "tiny"
    assert validate_item(Item("u", "u", "", -1, 0, _png(20, 70)), cfg)[0].drop == "extreme_aspect"
    assert (
        validate_item(Item("u", "u", "", -1, 0, b"", "fetch_error"), cfg)[0].drop == "fetch_error"
    )
    assert check_size(16, 48, cfg) == "" and check_size(16, 49, cfg) == "extreme_aspect"
