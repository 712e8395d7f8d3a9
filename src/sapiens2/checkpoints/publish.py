"""``push_to_hub``: a fine-tuned model as a Hugging Face repo (transformers-format folder and a
model card that names the Sapiens2 licence)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from sapiens2.checkpoints.transformers import (
    TRANSFORMERS_CLASSES,
    WEIGHTS_NAME,
    save_pretrained,
)
from sapiens2.models import Sapiens2, TaskModel
from sapiens2.models.task import head_spec

SAPIENS2_LICENSE_URL = "https://github.com/facebookresearch/sapiens2/blob/main/LICENSE.md"


def model_card(
    model: Sapiens2 | TaskModel,
    repo_id: str,
    *,
    base_model: str | None = None,
    license: str = "sapiens2",
) -> str:
    """The ``README.md`` of a pushed model: YAML metadata (licence, library, base model) and how
    to load it.

    Args:
        license: ``"sapiens2"`` (default: models fine-tuned from the released weights stay under
            Meta's Sapiens2 License) or an SPDX id for a model of other origin.
    """
    task = getattr(model, "task", None)
    arch = model.arch if isinstance(model, TaskModel) else model.cfg
    meta = ["---"]
    if license == "sapiens2":
        meta += [
            "license: other",
            "license_name: sapiens2-license",
            f"license_link: {SAPIENS2_LICENSE_URL}",
        ]
    else:
        meta.append(f"license: {license}")
    meta += ["library_name: sapiens2", "tags:", "- sapiens2", "- human-centric"]
    if task:
        meta.append(f"- {task}")
    head = head_spec(task) if task else None
    if head is not None and head.pipeline_tag:
        meta.append(f"pipeline_tag: {head.pipeline_tag}")
    if base_model:
        meta.append(f"base_model: {base_model}")
    meta.append("---")
    name = repo_id.split("/")[-1]
    origin = (
        f", fine-tuned from [{base_model}](https://huggingface.co/{base_model})"
        if base_model
        else ""
    )
    licence = (
        f"These weights derive from Meta's Sapiens2 models and are under the "
        f"[Sapiens2 License]({SAPIENS2_LICENSE_URL}); using them means accepting it."
        if license == "sapiens2"
        else f"License: {license}."
    )
    cls = TRANSFORMERS_CLASSES[task]
    body = f"""
# {name}

A Sapiens2 {head.description if head else "backbone (image features)"} model ({arch.name}){origin}, written by
[sapiens2](https://pypi.org/project/sapiens2/).

## Licence

{licence}

## Use

With sapiens2:

```python
import sapiens2
model = sapiens2.load_model("{repo_id}")
```

or `sapiens2 predict --task {task or "..."} --model {repo_id} --out out/ photos/`.

With transformers (`config.json` + `{WEIGHTS_NAME}`):

```python
from transformers import {cls}
model = {cls}.from_pretrained("{repo_id}")
```

transformers computes the rotary position embedding in float32 where Sapiens2 rounds it to
bfloat16, so its outputs differ slightly (about 0.5% of the output range).
"""
    return "\n".join(meta) + "\n" + body


def push_to_hub(
    model: Sapiens2 | TaskModel,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str | None = None,
    base_model: str | None = None,
    license: str = "sapiens2",
    revision: str | None = None,
    create_pr: bool = False,
) -> str:
    """Uploads ``model`` to the hub repo ``repo_id`` (created if missing) as a transformers-format
    folder (:func:`~sapiens2.checkpoints.transformers.save_pretrained`) with a model card
    (:func:`model_card`).

    Args:
        private, token, revision, create_pr: as in ``huggingface_hub.HfApi``.
        base_model: the repo the model was fine-tuned from (recorded in the card).
        license: see :func:`model_card`.

    Returns:
        The URL of the commit (or pull request).
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="sapiens2-push-") as tmp:
        folder = save_pretrained(model, Path(tmp))
        card = model_card(model, repo_id, base_model=base_model, license=license)
        (folder / "README.md").write_text(card)
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            commit_message=commit_message or "Upload Sapiens2 model",
            revision=revision,
            create_pr=create_pr,
        )
    return str(getattr(info, "pr_url", None) or getattr(info, "commit_url", info))
