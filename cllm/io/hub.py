"""Models named by a Hugging Face hub id: :func:`resolve_model_path`.

``cllm train --init-from owner/name``, ``cllm generate owner/name@v1``,
:func:`cllm.load` and every other loader accept, besides a local directory, a
hub id (``owner/name``, optionally ``@revision``: a branch, tag or commit).
The id is fetched with ``huggingface_hub.snapshot_download`` (the ``hub``
extra: ``pip install "cllm[hub]"``) into huggingface_hub's own cache
(``HF_HUB_CACHE``, or ``HF_HOME/hub``, default ``~/.cache/huggingface/hub``),
only the files cllm reads (:data:`MODEL_FILES`), and the snapshot directory
is returned. cllm itself writes nothing there; with ``HF_HUB_OFFLINE=1`` the
cache alone is used.

An existing local path is returned unchanged without importing
huggingface_hub, so local checkpoints behave exactly as without the extra.
Every failure is one :mod:`cllm.errors` exception naming the id and the way
out (install the extra, go online, log in, fix the name).
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from typing import Any, Iterator, Optional, Tuple, Union

from ..errors import CheckpointError, UnsupportedError

log = logging.getLogger(__name__)

__all__ = ["MODEL_FILES", "INSTALL_HINT", "parse_hub_id", "resolve_model_path"]

#: the files of a hub model cllm reads (the weights, the GPT-2 config, the
#: tokenizer and the Hugging Face files a cllm checkpoint also carries)
MODEL_FILES = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "generation_config.json"]
INSTALL_HINT = "pip install 'cllm[hub]'"

# owner/name as the hub spells them (letters, digits, '-', '_', '.'; not starting with '.' or '-'),
# then an optional @revision (a branch, tag, commit or refs/pr/N)
_HUB_ID = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95})(?:@(?P<rev>[\w.][\w./-]{0,199}))?")


def parse_hub_id(text: str) -> Optional[Tuple[str, Optional[str]]]:
    """``(repo_id, revision or None)`` if ``text`` looks like a hub id
    (``owner/name`` or ``owner/name@revision``), else None."""
    m = _HUB_ID.fullmatch(text)
    if m is None or ".." in m.group("repo") or "--" in m.group("repo"):
        return None
    return m.group("repo"), m.group("rev")


def resolve_model_path(name_or_path: Union[str, "os.PathLike[str]"]) -> str:
    """The local directory of ``name_or_path``: an existing path as it is
    (huggingface_hub is not even imported), or the snapshot of a hub id
    ``owner/name[@revision]`` downloaded into the Hugging Face cache.

    Raises :class:`~cllm.UnsupportedError` when the ``hub`` extra is missing and
    :class:`~cllm.CheckpointError` when the path does not exist and is no hub
    id, or the id is not on the hub, gated, or not cached while offline."""
    text = os.fspath(name_or_path)
    if os.path.lexists(text):
        return text
    parsed = parse_hub_id(text)
    if parsed is None:
        raise CheckpointError(f"{text}: checkpoint directory not found (no such directory; a Hugging Face hub "
                              f"model is named owner/name)")
    repo, rev = parsed
    try:   # what _download uses, all in huggingface_hub 0.20 and later
        from huggingface_hub import constants, snapshot_download, try_to_load_from_cache, utils  # noqa: F401
    except ImportError:
        raise UnsupportedError(f"{text}: no such directory; to download the Hugging Face hub model {repo}, "
                               f"install the hub extra: {INSTALL_HINT}") from None
    return _download(text, repo, rev)


def _offline(constants: Any) -> bool:
    """Whether huggingface_hub is in offline mode (``HF_HUB_OFFLINE=1``)."""
    is_offline = getattr(constants, "is_offline_mode", None)
    return bool(is_offline() if callable(is_offline) else constants.HF_HUB_OFFLINE)


@contextlib.contextmanager
def _plain_output() -> Iterator[None]:
    """huggingface_hub's progress bars only on a terminal: when stderr is a
    file or a pipe (CI logs, ``2> log``) they are off for the download."""
    from huggingface_hub import utils
    turn_off = not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty()) and not utils.are_progress_bars_disabled()
    if turn_off:
        utils.disable_progress_bars()
    try:
        yield
    finally:
        if turn_off:
            utils.enable_progress_bars()


def _download(text: str, repo: str, rev: Optional[str]) -> str:
    """``snapshot_download`` of :data:`MODEL_FILES` of ``repo`` at ``rev``, its
    errors turned into one-line cllm errors."""
    from huggingface_hub import constants, snapshot_download, try_to_load_from_cache, utils
    cache = constants.HF_HUB_CACHE
    offline = _offline(constants)
    where = f"{repo} (revision {rev or 'main'})"
    if offline:
        log.debug("using %s from the Hugging Face cache %s (HF_HUB_OFFLINE is set)", where, cache)
    elif isinstance(try_to_load_from_cache(repo, "config.json", revision=rev), str):
        log.debug("checking %s in the cache %s against the hub", where, cache)
    else:
        log.info("downloading %s to %s", where, cache)
    try:
        with _plain_output():
            return str(snapshot_download(repo, revision=rev, allow_patterns=list(MODEL_FILES),
                                         local_files_only=offline))
    except utils.HFValidationError as e:
        raise CheckpointError(f"{text}: not a valid Hugging Face hub id: {_first_line(e)}") from None
    except utils.GatedRepoError:
        raise CheckpointError(f"{text}: the hub model {repo} is gated: accept its terms on huggingface.co, then "
                              f"log in (hf auth login, or set HF_TOKEN)") from None
    except utils.RepositoryNotFoundError:
        raise CheckpointError(f"{text}: no such directory, and no model {repo} on the Hugging Face hub (a "
                              f"private one needs a token: hf auth login, or set HF_TOKEN)") from None
    except utils.RevisionNotFoundError:
        raise CheckpointError(f"{text}: the hub model {repo} has no revision {rev!r}") from None
    except utils.LocalEntryNotFoundError:
        if offline:
            raise CheckpointError(f"{text}: not in the Hugging Face cache at {cache}, and HF_HUB_OFFLINE is set "
                                  f"(download it once without HF_HUB_OFFLINE, or point HF_HUB_CACHE at a cache "
                                  f"that holds it)") from None
        raise CheckpointError(f"{text}: could not reach the Hugging Face hub, and {where} is not in the cache at "
                              f"{cache} (check the network, or download it once where there is one and set "
                              f"HF_HUB_OFFLINE=1 to use the cache only)") from None
    except utils.HfHubHTTPError as e:
        raise CheckpointError(f"{text}: the Hugging Face hub refused the download: {_first_line(e)}") from None
    except OSError as e:   # a full disk or an unwritable cache
        raise CheckpointError(f"{text}: downloading {where} to {cache} failed: {e}") from None


def _first_line(e: BaseException) -> str:
    """The first line of an exception's message (huggingface_hub's span several)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
