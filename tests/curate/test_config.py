import json

import pytest

from sapiens2.curate.config import CurateConfig, config_from_dict, load_config


def test_defaults_follow_the_paper():
    c = CurateConfig()
    assert c.person.min_box_short_side == 384
    assert c.embed.pool == "cls"


def test_json_and_toml_give_the_same_config(tmp_path):
    d = {
        "seed": 3,
        "person": {"min_box_short_side": 256, "input_size": [512, 384]},
        "dedup": {"min_similarity": 0.9},
    }
    (tmp_path / "c.json").write_text(json.dumps(d))
    (tmp_path / "c.toml").write_text(
        "seed = 3\n[person]\nmin_box_short_side = 256\ninput_size = [512, 384]\n[dedup]\nmin_similarity = 0.9\n"
    )
    a, b = load_config(tmp_path / "c.json"), load_config(tmp_path / "c.toml")
    assert a == b
    assert a.person.input_size == (512, 384) and a.seed == 3 and a.read == CurateConfig().read
    assert a.stage_hash("dedup") != CurateConfig().stage_hash("dedup")


def test_json_null_disables_a_check():
    assert config_from_dict({"quality": {"max_text": None}}).quality.max_text is None


@pytest.mark.parametrize(
    ("data", "msg"),
    [
        ({"persn": {}}, "unknown key(s) 'persn'"),
        ({"person": {"min_box": 3}}, "config person: unknown key(s) 'min_box'"),
        ({"seed": "1"}, "config seed: expected"),
        ({"read": {"min_side": None}}, "config read.min_side: null"),
        ({"embed": {"pool": "max"}}, "embed.pool must be"),
        ({"person": {"input_size": [100, 64]}}, "person.input_size must be"),
        ({"person": 5}, "config person: expected a table"),
    ],
)
def test_bad_configs_name_the_problem(data, msg):
    with pytest.raises(ValueError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        config_from_dict(data)


def test_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.json"):
        load_config(tmp_path / "nope.json")
    (tmp_path / "c.yaml").write_text("seed: 1")
    with pytest.raises(ValueError, match=r"\.json or \.toml"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "bad.json").write_text('{"seed": 1, "x": 2}')
    with pytest.raises(ValueError, match=r"bad\.json: config file: unknown key\(s\) 'x'"):
        load_config(tmp_path / "bad.json")
