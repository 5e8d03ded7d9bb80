"""Hugging Face model repositories as a pretraining source: ``https://huggingface.co/<org>/<repo>`` or
``hf://<org>/<repo>``, either optionally followed by ``@<revision>`` (a branch, tag or commit).

The files land where nnU-Net master's ``maybe_download_pretrained_weights``
(``nnunetv2/experiment_planning/like_nnssl.py``) puts them, ``$nnssl_pretrained_models/<org>_<repo>/``, through
huggingface_hub's ``hf_hub_download(..., local_dir=...)``: downloaded once, later calls only ask whether the
repository changed. huggingface_hub records the commit each file came from next to it
(``.cache/huggingface/download/<file>.metadata``); that commit is the revision nnssl records in the plans and
the fine-tuning log. With ``HF_HUB_OFFLINE=1`` nothing is asked: what the folder holds is used.

A repository holds (what ``nnssl_export`` writes) ``adaptation_plan.json``, ``checkpoint_final.pth`` and
``config.json``. The adaptation plan comes first and is checked before the checkpoint is downloaded, so a
repository that is not an nnssl checkpoint, or whose network nnssl cannot build, fails in seconds.
huggingface_hub is imported inside the functions that need it: importing this module stays cheap.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass

from nnssl.checkpoints.adaptation_plan import (
    ADAPTATION_PLAN_KEY,
    architecture_from_adaptation_plan,
    read_adaptation_plan,
)
from nnssl.checkpoints.layout import FINAL_CHECKPOINT
from nnssl.errors import NnsslError
from nnssl.nnunet_folders import PRETRAINED_MODELS_ENV, nnunet_folder

logger = logging.getLogger(__name__)

HUB_URL = "https://huggingface.co/"
HUB_URI = "hf://"
# with FINAL_CHECKPOINT, the files nnU-Net master fetches too (it refuses a repository without the plan)
ADAPTATION_PLAN_FILE = "adaptation_plan.json"
CONFIG_FILE = "config.json"
# a repository or organisation name as the Hub allows it (huggingface_hub's validate_repo_id): letters, digits,
# '-', '_', '.', at most 96, starting and ending with a letter, digit or '_'; no '--' or '..', no '.git' ending
_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?")
_NAME_FORBIDDEN = ("--", "..")
_COMMIT = re.compile(r"[0-9a-f]{40}")
# where huggingface_hub keeps its record of each file downloaded into a local folder
DOWNLOAD_RECORDS = (".cache", "huggingface", "download")
_SYNTAX = "write https://huggingface.co/<org>/<repo> or hf://<org>/<repo>, optionally followed by @<revision>"


@dataclass(frozen=True)
class RepositoryReference:
    """A model repository on the Hub and, optionally, the revision (branch, tag or commit) asked for."""

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return HUB_URI + self.repo_id + (f"@{self.revision}" if self.revision else "")

    @property
    def url(self) -> str:
        return HUB_URL + self.repo_id


def is_repo_id(value: str) -> bool:
    """Whether ``value`` is a repository id, ``<org>/<repo>``."""
    parts = value.split("/")
    return len(parts) == 2 and all(_NAME.fullmatch(p) and not any(f in p for f in _NAME_FORBIDDEN) for p in parts) \
        and not value.endswith(".git")


def is_repository_reference(value: str) -> bool:
    """Whether ``value`` names a model repository (and not a file or folder)."""
    return value.startswith((HUB_URL, HUB_URI))


def parse_repository_reference(value: str) -> RepositoryReference | None:
    """The repository ``value`` names; None for anything else (a path). A malformed reference is an NnsslError.

    Accepts ``https://huggingface.co/<org>/<repo>``, the browser's ``.../<repo>/tree/<revision>`` and
    ``hf://<org>/<repo>``, each with an optional ``@<revision>``.
    """
    if not is_repository_reference(value):
        return None
    is_url = value.startswith(HUB_URL)
    rest = value[len(HUB_URL if is_url else HUB_URI):]
    rest, _, revision = rest.partition("@")
    parts = rest.strip("/").split("/")
    if is_url and len(parts) == 4 and parts[2] == "tree" and not revision:
        parts, revision = parts[:2], parts[3]
    if not is_repo_id("/".join(parts)) or ("@" in value and not revision):
        raise NnsslError(f"{value}: not a model repository reference; {_SYNTAX}")
    return RepositoryReference("/".join(parts), revision or None)


@dataclass(frozen=True)
class FetchedRepository:
    """A repository's files in the download folder; ``commit``: the commit they came from (None: unknown, the
    files were put there by hand)."""

    reference: RepositoryReference
    folder: str
    checkpoint: str
    commit: str | None

    @property
    def pinned(self) -> str:
        """The reference with the commit it resolved to: what the plans record, so every run fetches the same."""
        return str(RepositoryReference(self.reference.repo_id, self.commit or self.reference.revision))

    def describe(self) -> str:
        revision = self.commit or f"unknown (no download record in {self.folder}; files put there by hand)"
        return f"{self.reference.url} at revision {revision}"


def download_folder(reference: RepositoryReference) -> str:
    """``$nnssl_pretrained_models/<org>_<repo>``, nnU-Net master's folder for the repository."""
    root = nnunet_folder(PRETRAINED_MODELS_ENV, f" (the folder Hugging Face checkpoints are downloaded to, to use "
                                                f"{reference.url})")
    return os.path.join(root, reference.repo_id.replace("/", "_"))


def recorded_commit(folder: str, filename: str) -> str | None:
    """The commit huggingface_hub downloaded ``filename`` from into ``folder`` (None: no record, or the file
    changed since).

    huggingface_hub's ``hf_hub_download(..., local_dir=folder)`` writes ``.cache/huggingface/download/<file>.metadata``
    (commit, etag, time of the download, one per line). It is read here directly, not through huggingface_hub's
    reader, which creates folders and a lock file: a shared download folder may be read-only.
    """
    path = os.path.join(folder, filename)
    record = os.path.join(folder, *DOWNLOAD_RECORDS, filename + ".metadata")
    try:
        with open(record) as f:
            commit, _etag, downloaded = (f.readline().strip() for _ in range(3))
        changed_since = os.stat(path).st_mtime - 1 > float(downloaded)  # huggingface_hub's own 1 s allowance
    except (OSError, ValueError):
        return None
    return None if changed_since or not _COMMIT.fullmatch(commit) else commit


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _download(reference: RepositoryReference, folder: str, filename: str) -> str:
    """``filename`` of the repository in ``folder``: downloaded (or found up to date), else a one-line error."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = reference.url
    try:
        return hf_hub_download(reference.repo_id, filename, revision=reference.revision, local_dir=folder)
    except GatedRepoError as e:
        raise NnsslError(f"{where}: access to this repository is restricted; accept its conditions on the Hub "
                         f"and log in (hf auth login)") from e
    except RepositoryNotFoundError as e:
        raise NnsslError(f"{where}: no such model repository (or a private one); check the name, or log in "
                         f"(hf auth login)") from e
    except RevisionNotFoundError as e:
        raise NnsslError(f"{where}: no revision '{reference.revision}'; check the name after @") from e
    except LocalEntryNotFoundError as e:  # before EntryNotFoundError, its base class
        raise NnsslError(f"{where}: cannot reach the Hub and {folder} holds no {filename}; connect to the network "
                         f"once, or copy the repository's files into {folder}") from e
    except EntryNotFoundError as e:
        raise _missing_file(where, filename) from e
    except ValueError as e:  # huggingface_hub's HFValidationError: a name the Hub does not allow
        raise NnsslError(f"{where}: {str(e).strip().splitlines()[0]}; {_SYNTAX}") from e
    except (HfHubHTTPError, OSError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise NnsslError(f"{where}: downloading {filename} failed ({first_line}); try again") from e


def _missing_file(where: str, filename: str) -> NnsslError:
    if filename == ADAPTATION_PLAN_FILE:
        return NnsslError(f"{where}: no {ADAPTATION_PLAN_FILE}: not an nnssl checkpoint repository; name a "
                          f"repository written by nnssl_export or nnssl (see docs/checkpoints.md)")
    return NnsslError(f"{where}: has {ADAPTATION_PLAN_FILE} but no {filename}; the repository is incomplete")


def _local_file(reference: RepositoryReference, folder: str, filename: str) -> str:
    """``filename`` in ``folder`` when offline, else a one-line error."""
    path = os.path.join(folder, filename)
    if os.path.isfile(path):
        return path
    if filename == ADAPTATION_PLAN_FILE and os.path.isdir(folder) and os.listdir(folder):
        raise _missing_file(f"{reference.url} (offline, {folder})", filename)
    raise NnsslError(f"{reference.url}: HF_HUB_OFFLINE is set and {folder} holds no {filename}; download it once "
                     f"without HF_HUB_OFFLINE, or copy the repository's files into {folder}")


def check_adaptation_plan_file(path: str, label: str) -> None:
    """An ``adaptation_plan.json`` with the required fields and a network nnssl builds; one-line errors."""
    try:
        with open(path) as f:
            plan = json.load(f)
    except (OSError, ValueError) as e:
        raise NnsslError(f"{label}: unreadable ({e}); it is not an nnssl adaptation plan") from e
    if not isinstance(plan, dict):
        raise NnsslError(f"{label}: holds no adaptation plan (a JSON object); not an nnssl checkpoint repository")
    architecture_from_adaptation_plan(read_adaptation_plan({ADAPTATION_PLAN_KEY: plan}, label), label)


def _check_revision(reference: RepositoryReference, commit: str | None, folder: str, offline: bool) -> None:
    """A commit asked for must be the one the folder holds: offline, and online when the Hub cannot be reached,
    huggingface_hub returns whatever the folder holds."""
    asked = reference.revision
    if asked and _COMMIT.fullmatch(asked) and commit is not None and commit != asked:
        fix = "without HF_HUB_OFFLINE" if offline else "with the Hub reachable"
        raise NnsslError(f"{reference.url}: {folder} holds revision {commit}, not {asked}; download {asked} "
                         f"{fix}, or name @{commit}")
    if offline and asked and (commit is None or not _COMMIT.fullmatch(asked)):
        logger.warning("%s: offline, revision '%s' cannot be checked against the files in %s (they hold %s); "
                       "using them", reference.url, asked, folder, commit or "no download record")


def _fetch_files(reference: RepositoryReference, folder: str) -> tuple[str, str | None]:
    """The adaptation plan (checked), then the checkpoint and config.json; returns the checkpoint's path and the
    commit it came from (``recorded_commit``)."""
    offline = _offline()
    fetch = _local_file if offline else _download
    plan_file = fetch(reference, folder, ADAPTATION_PLAN_FILE)
    check_adaptation_plan_file(plan_file, f"{reference.url} ({ADAPTATION_PLAN_FILE})")
    checkpoint = fetch(reference, folder, FINAL_CHECKPOINT)
    commit = recorded_commit(folder, FINAL_CHECKPOINT)
    _check_revision(reference, commit, folder, offline)
    if offline:
        return checkpoint, commit
    try:  # nnssl does not read config.json; nnU-Net master fetches it too (the Hub counts downloads by it)
        fetch(reference, folder, CONFIG_FILE)
    except NnsslError as e:
        logger.warning("%s (nnssl does not need it; nnU-Net master's download does)", e)
    return checkpoint, commit


def fetch_repository(reference: RepositoryReference) -> FetchedRepository:
    """The repository's checkpoint in ``$nnssl_pretrained_models/<org>_<repo>/`` (downloaded when needed).

    Raises:
        NnsslError: one line for an unset ``nnssl_pretrained_models``, a repository that is missing, not an
            nnssl checkpoint repository or holds a network nnssl cannot build, and for no network with
            nothing in the folder. A folder this call created is removed again then.
    """
    folder = download_folder(reference)
    created = not os.path.exists(folder)
    try:
        checkpoint, commit = _fetch_files(reference, folder)
    except BaseException:
        if created:
            shutil.rmtree(folder, ignore_errors=True)  # nothing left of a failed first fetch
        raise
    fetched = FetchedRepository(reference, folder, checkpoint, commit)
    logger.info("%s: %s", fetched.describe(), checkpoint)
    return fetched
