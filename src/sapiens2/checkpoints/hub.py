"""Resolving a model source: a local file, a directory, or a Hugging Face hub id.

Hub downloads go through ``huggingface_hub``, so its cache (``HF_HOME``, ``HF_HUB_CACHE``) and
offline mode (``HF_HUB_OFFLINE=1``) apply unchanged.
"""

from __future__ import annotations

import re
from pathlib import Path

_REPO = re.compile(r"^[\w.-]+/[\w.-]+$")
# facebook/sapiens2-<task>-<size>, size possibly "1b-4k".
_OFFICIAL = re.compile(r"^sapiens2-(?P<task>[a-z]+)-(?P<size>[\d.]+b(?:-4k)?)$")


def hub_filename(repo_id: str) -> str:
    """The weights file of an official repo: ``facebook/sapiens2-pose-0.4b`` ->
    ``sapiens2_0.4b_pose.safetensors``."""
    m = _OFFICIAL.match(repo_id.split("/", 1)[-1])
    if m is None:
        raise ValueError(
            f"cannot tell the weights file of hub repo {repo_id!r}; name it as "
            f"'{repo_id}/<file>.safetensors'"
        )
    size = m["size"].replace("-", "_")
    return f"sapiens2_{size}_{m['task']}.safetensors"


def resolve_source(
    source: str | Path,
    *,
    cache_dir: str | Path | None = None,
    revision: str | None = None,
    local_files_only: bool | None = None,
) -> Path:
    """A local path for ``source``.

    Accepts a file; a directory with exactly one ``.safetensors`` file (or ``model.safetensors``);
    a hub repo id (``facebook/sapiens2-seg-1b``); or ``<repo id>/<file name>``.
    """
    text = str(source)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        return _file_in_dir(path)
    parts = text.split("/")
    if len(parts) == 3 and parts[2].endswith((".safetensors", ".pth", ".pt", ".bin")):
        repo_id, filename = "/".join(parts[:2]), parts[2]
    elif _REPO.match(text) and not text.endswith((".safetensors", ".pth", ".pt")):
        repo_id, filename = text, hub_filename(text)
    else:
        raise FileNotFoundError(f"model source {text!r} is neither a file, a folder nor a hub id")
    from huggingface_hub import hf_hub_download

    kwargs = {"cache_dir": cache_dir, "revision": revision}
    if local_files_only is not None:
        kwargs["local_files_only"] = local_files_only
    try:
        return Path(hf_hub_download(repo_id, filename, **kwargs))
    except Exception as err:  # the hub library raises many types; keep its message
        raise FileNotFoundError(
            f"could not get {filename} from hub repo {repo_id}: {err}. Offline? Set "
            f"HF_HUB_OFFLINE=1 to use the local cache, or pass a file path."
        ) from err


def _file_in_dir(path: Path) -> Path:
    preferred = path / "model.safetensors"
    if preferred.is_file():
        return preferred
    files = sorted(path.glob("*.safetensors"))
    if len(files) != 1:
        raise FileNotFoundError(
            f"{path}: expected one .safetensors file (or model.safetensors), found {len(files)}"
        )
    return files[0]
