"""A small synthetic dataset shared by the training tests (rendered once per session)."""

from __future__ import annotations

import pytest

from sapiens2.data.synth.render import SynthConfig
from sapiens2.data.synth.writer import WriteConfig, write_dataset


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "data"
    write_dataset(
        WriteConfig(
            root, num=24, seed=3, val_fraction=0.25, render=SynthConfig(96, 64, people_max=1)
        )
    )
    return root
