"""Resolving a model source: a local file or folder, a bundled demo model, or a Hugging Face hub id.

A source names the hub only when it cannot be a local path: ``hf://owner/name[/file]`` always
means the hub; a bare ``owner/name`` does when no file or folder of that name exists, ``owner`` is
not a local folder and the name does not end in a file extension. A path that does not exist is an
error naming it and never falls back to a download (a typo must not load someone else's
repository). ``demo:<task>`` names the small demo models shipped in the package.

Hub downloads go through ``huggingface_hub``, so its cache (``HF_HOME``, ``HF_HUB_CACHE``) and
offline mode (``HF_HUB_OFFLINE=1``) apply unchanged. Offline, or when the hub cannot be reached,
a cached copy is used and a missing one is one error line at once, without the library's retries.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from pathlib import Path
from urllib.parse import urlsplit

from sapiens2.errors import ModelSourceError, UsageError

logger = logging.getLogger(__name__)

HUB_PREFIX = "hf://"
DEMO_PREFIX = "demo:"
# A hub repo id: two names of letters, digits, '.', '_' and '-', neither starting with '.' or '-'.
_REPO = re.compile(r"^[\w][\w.-]*/[\w][\w.-]*$")
# facebook/sapiens2-<task>-<size>, size possibly "1b-4k".
_OFFICIAL = re.compile(r"^sapiens2-(?P<task>[a-z]+)-(?P<size>[\d.]+b(?:-4k)?)$")
# A last dot-part of letters ("x.safetensors", "a.pth", "b.json") marks a file name, not a repo.
_FILE_SUFFIX = re.compile(r"\.[A-Za-z][A-Za-z0-9]*$")
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def hub_filename(repo_id: str) -> str:
    """The weights file of an official repo: ``facebook/sapiens2-pose-0.4b`` ->
    ``sapiens2_0.4b_pose.safetensors``."""
    m = _OFFICIAL.match(repo_id.split("/", 1)[-1])
    if m is None:
        raise UsageError(
            f"cannot tell the weights file of hub repo {repo_id!r}; name it as "
            f"'{HUB_PREFIX}{repo_id}/<file>.safetensors'"
        )
    size = m["size"].replace("-", "_")
    return f"sapiens2_{size}_{m['task']}.safetensors"


def hub_reference(text: str) -> tuple[str, str | None] | None:
    """``(repo_id, file name or None)`` when ``text`` names the hub by its form alone (see the
    module docstring; local existence is checked by the caller), else None.

    Raises:
        ModelSourceError: an ``hf://`` source that is not ``hf://owner/name[/file]``.
    """
    if text.startswith(HUB_PREFIX):
        rest = text[len(HUB_PREFIX) :]
        parts = rest.split("/")
        if len(parts) < 2 or not _REPO.match("/".join(parts[:2])) or not all(parts):
            raise ModelSourceError(f"{text!r} is not hf://<owner>/<name>[/<file>]")
        return "/".join(parts[:2]), "/".join(parts[2:]) or None
    if _REPO.match(text) and not _FILE_SUFFIX.search(text):
        return text, None
    return None


def locate(source: str | os.PathLike[str], what: str = "model") -> Path | tuple[str, str | None]:
    """A local path, or ``(repo_id, file name or None)`` for the hub; never touches the network.
    A ``Path`` object always names a local path.

    Raises:
        ModelSourceError: the source names a local path that does not exist (the message says how
            to name the hub instead when the text could be a repo id).
    """
    text = os.fspath(source)
    if isinstance(text, bytes):
        text = text.decode()
    if text.startswith(DEMO_PREFIX):
        return demo_path(text)
    if text.startswith(HUB_PREFIX):
        ref = hub_reference(text)
        assert ref is not None
        return ref
    path = Path(text).expanduser()
    if path.exists():
        return path
    ref = hub_reference(text) if isinstance(source, str) else None  # a Path is a local path
    owner = text.split("/", 1)[0]
    if ref is not None and not Path(owner).is_dir():
        return ref
    hint = ""
    if "/" in text and not text.startswith(("/", ".", "~")):
        hint = f" (to fetch it from the Hugging Face hub, write {HUB_PREFIX}{text})"
    raise ModelSourceError(f"{what} not found: no file or folder {text}{hint}")


def demo_path(text: str) -> Path:
    """``demo:<task>`` -> the bundled demo checkpoint of that task."""
    from sapiens2.demo import DEMO_TASKS, demo_model_path

    task = text[len(DEMO_PREFIX) :]
    if task not in DEMO_TASKS:
        raise ModelSourceError(
            f"{text!r}: no such demo model; the demo models are "
            + ", ".join(f"{DEMO_PREFIX}{t}" for t in DEMO_TASKS)
        )
    return demo_model_path(task)


def resolve_source(
    source: str | os.PathLike[str],
    *,
    cache_dir: str | Path | None = None,
    revision: str | None = None,
    local_files_only: bool | None = None,
) -> Path:
    """A local path for ``source``.

    Accepts a file; a directory with exactly one ``.safetensors`` file (or ``model.safetensors``);
    ``demo:<task>`` (the bundled demo models: seg, pose, normal, pointmap, albedo); a hub repo id
    (``facebook/sapiens2-seg-1b``, or ``hf://facebook/sapiens2-seg-1b``); or
    ``hf://<repo id>/<file name>``.

    Raises:
        ModelSourceError (a FileNotFoundError): a missing path, a folder without one weights file,
            or a hub file that cannot be had (the message says why, in one line).
    """
    found = locate(source)
    if isinstance(found, Path):
        if found.is_dir():
            return _file_in_dir(found)
        if not found.is_file():
            raise ModelSourceError(f"model {found}: not a regular file")
        return found
    repo_id, filename = found
    return hub_download(
        repo_id,
        filename or hub_filename(repo_id),
        cache_dir=cache_dir,
        revision=revision,
        local_files_only=local_files_only,
    )


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set, read now."""
    import huggingface_hub.constants as hf

    values = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return bool(hf.HF_HUB_OFFLINE) or any(
        v.strip().upper() in ("1", "ON", "YES", "TRUE") for v in values
    )


def hub_endpoint() -> str:
    """The hub URL in use (``HF_ENDPOINT`` read now, else huggingface_hub's)."""
    import huggingface_hub.constants as hf

    return (os.environ.get("HF_ENDPOINT") or hf.ENDPOINT).rstrip("/")


def unreachable(endpoint: str, timeout: float = 3.0) -> str | None:
    """Why ``endpoint`` cannot be reached with one TCP connection (None when it can, or when a
    proxy is configured and the question cannot be answered without it)."""
    if any(os.environ.get(v) for v in _PROXY_VARS):
        return None
    url = urlsplit(endpoint)
    if not url.hostname:
        return f"{endpoint!r} is not a URL"
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return None
    except OSError as err:
        return str(err) or type(err).__name__


def hub_download(
    repo_id: str,
    filename: str,
    *,
    cache_dir: str | Path | None = None,
    revision: str | None = None,
    local_files_only: bool | None = None,
) -> Path:
    """The local path of ``filename`` in hub repo ``repo_id``, from the cache or downloaded.

    Offline (``HF_HUB_OFFLINE`` / ``local_files_only``) only the cache is used. Online, the
    endpoint is tried once first: when it cannot be reached, a cached copy is used (with a
    warning) and a missing one is an error at once, instead of huggingface_hub's half-minute of
    retries.

    Raises:
        ModelSourceError: the file is not cached and cannot be downloaded; the message says why.
    """
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    _log_hub_messages_once()
    where = f"{repo_id}/{filename}"
    if revision:
        where += f"@{revision}"

    def cached() -> Path | None:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision)
        return Path(found) if isinstance(found, str) else None

    if local_files_only or hub_offline():
        path = cached()
        if path is not None:
            return path
        why = "local_files_only=True" if local_files_only else "HF_HUB_OFFLINE is set"
        raise ModelSourceError(
            f"hub file {where} is not in the Hugging Face cache and {why}, so nothing is "
            "downloaded: fetch it once with network access, or pass a local file path"
        )
    endpoint = hub_endpoint()
    reason = unreachable(endpoint)
    if reason is not None:
        path = cached()
        if path is not None:
            logger.warning("cannot reach %s (%s); using the cached %s", endpoint, reason, where)
            return path
        raise ModelSourceError(
            f"cannot download hub file {where}: {endpoint} is unreachable ({reason}) and the "
            "file is not in the Hugging Face cache; connect to the network, or pass a local "
            "file path"
        )
    try:
        return Path(
            hf_hub_download(
                repo_id, filename, cache_dir=cache_dir, revision=revision, endpoint=endpoint
            )
        )
    except Exception as err:  # the hub library raises many types; say which case it is
        raise ModelSourceError(f"cannot download hub file {where}: {_hub_reason(err)}") from err


def _log_hub_messages_once() -> None:
    """huggingface_hub prints its warnings with a handler of its own and also passes them on to
    the root logger: when the application configured the root logger (``sapiens2`` does), every
    warning would show twice."""
    hub = logging.getLogger("huggingface_hub")
    if hub.handlers and logging.getLogger().handlers:
        hub.propagate = False


def _hub_reason(err: Exception) -> str:
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(err, GatedRepoError):
        return "the repository is gated: accept its terms on the hub and log in (hf auth login)"
    if isinstance(err, RepositoryNotFoundError):
        return "no such repository (or it is private: log in with hf auth login)"
    if isinstance(err, RevisionNotFoundError):
        return "no such revision in the repository"
    if isinstance(err, EntryNotFoundError):
        return "the repository has no such file"
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return (lines[0] if lines else type(err).__name__).rstrip(".")


def _file_in_dir(path: Path) -> Path:
    preferred = path / "model.safetensors"
    if preferred.is_file():
        return preferred
    files = sorted(p for p in path.glob("*.safetensors") if p.is_file())
    if len(files) != 1:
        raise ModelSourceError(
            f"{path}: expected one .safetensors file (or model.safetensors), found {len(files)}"
        )
    return files[0]
