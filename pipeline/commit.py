"""Staged, committed outputs: a failed or killed run never looks finished.

A run writes everything under `OUTPUT/_staging/<run_id>/`. Only when the
pipeline has succeeded and its counts reconcile does `commit` move the staged
entries into OUTPUT, after removing the previous run's manifest first and then
the rest of its files, so that shards of two runs never mix (Beam's sinks leave
stale shards behind when shard counts differ). The caller writes manifest.json
last: its presence is what marks a directory complete, and the trainer and the
streaming job refuse a directory without one.

One run at a time per output directory: a second concurrent run's commit would
remove the first one's staging area.

Paths go through Beam's FileSystems so gs:// works too. On object stores a
"rename" is a copy and a delete, so the commit is not atomic there, but the
manifest-last order still holds: an interrupted commit leaves no manifest.
"""

from __future__ import annotations

import enum
import os
import shutil
import time
import uuid

from apache_beam.io.filesystems import FileSystems

from pipeline import manifest as manifest_io
from pipeline.layout import LOGS_DIR, STAGING_DIR

# Like the staging area, the runs' log files (pipeline/logs.py) are not an
# output: a commit leaves them, and a failed run's log stays for reading.
_NOT_OUTPUTS = frozenset({STAGING_DIR, LOGS_DIR})


class OutputState(enum.Enum):
    ABSENT = "absent"  # no such directory, or nothing in it
    COMPLETE = "complete"  # holds manifest.json
    INCOMPLETE = "incomplete"  # holds files but no manifest: a failed run, or someone else's


def new_run_id(now: float | None = None) -> str:
    """Sortable and unique: UTC time of the start plus a random suffix."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now if now is not None else time.time()))
    return f"{stamp}-{uuid.uuid4().hex[:8]}"


def staging_dir(root: str, run_id: str) -> str:
    return manifest_io.join(root, STAGING_DIR, run_id)


def _is_local(path: str) -> bool:
    return "://" not in path


def _committed_files(root: str) -> list[str]:
    """Every file under `root` outside the staging area and the logs."""
    prefix = root.rstrip("/") + "/"
    excluded = tuple(prefix + name + "/" for name in _NOT_OUTPUTS)
    return [path for path in manifest_io.list_files(prefix + "**") if not path.startswith(excluded)]


def output_state(root: str) -> OutputState:
    if manifest_io.list_files(manifest_io.join(root, manifest_io.MANIFEST_NAME)):
        return OutputState.COMPLETE
    if _is_local(root):
        entries = os.listdir(root) if os.path.isdir(root) else []
        return OutputState.INCOMPLETE if set(entries) - _NOT_OUTPUTS else OutputState.ABSENT
    return OutputState.INCOMPLETE if _committed_files(root) else OutputState.ABSENT


def refusal(root: str, overwrite: bool) -> str | None:
    """Why a run must not write into `root`, or None when it may."""
    state = output_state(root)
    if overwrite or state is OutputState.ABSENT:
        return None
    if state is OutputState.COMPLETE:
        return (
            f"--output_dir {root} already holds a complete run (manifest.json); choose a "
            "new directory or pass --overwrite, which replaces it once the new run succeeds"
        )
    return (
        f"--output_dir {root} holds files but no manifest.json: the remains of a failed or "
        "killed run, or files of another tool; choose a new directory or pass --overwrite "
        "to replace them"
    )


def _remove(paths: list[str]) -> None:
    for path in paths:
        if _is_local(path):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.remove(path)
        elif FileSystems.exists(path):
            FileSystems.delete([path])


def commit(staging: str, root: str) -> None:
    """Replaces whatever `root` holds (outside the staging area and the logs) by
    the entries of `staging`. The old manifest goes first, so no moment looks
    complete."""
    _remove([manifest_io.join(root, manifest_io.MANIFEST_NAME)])
    if _is_local(root):
        _remove([os.path.join(root, e) for e in os.listdir(root) if e not in _NOT_OUTPUTS])
        for entry in sorted(os.listdir(staging)):
            os.replace(os.path.join(staging, entry), os.path.join(root, entry))
        return
    _remove(_committed_files(root))
    sources = manifest_io.list_files(staging.rstrip("/") + "/**")
    prefix = staging.rstrip("/") + "/"
    FileSystems.rename(sources, [manifest_io.join(root, path[len(prefix) :]) for path in sources])


def discard(path: str) -> None:
    """Removes a staging directory, and the staging area once it is empty."""
    _remove([path])
    parent = os.path.dirname(path.rstrip("/"))
    if _is_local(parent) and os.path.isdir(parent) and not os.listdir(parent):
        os.rmdir(parent)


def clear_staging_area(root: str) -> None:
    """After a commit: removes what killed or failed runs left in the staging area."""
    _remove([manifest_io.join(root, STAGING_DIR)])
