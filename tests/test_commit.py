"""Staged outputs: what a run may write into, and a commit that never mixes runs."""

from __future__ import annotations

import os

import pytest

from pipeline import commit


def _write(path, text="x"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)


def _tree(root) -> dict[str, str]:
    found = {}
    for directory, _, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            with open(path) as handle:
                found[os.path.relpath(path, root)] = handle.read()
    return found


@pytest.mark.parametrize(
    "files, state",
    [
        ([], commit.OutputState.ABSENT),
        (["_staging/run1/train/part-0"], commit.OutputState.ABSENT),
        (["train/part-0"], commit.OutputState.INCOMPLETE),
        (["train/part-0", "manifest.json"], commit.OutputState.COMPLETE),
    ],
)
def test_output_state(tmp_path, files, state):
    for name in files:
        _write(str(tmp_path / "out" / name))
    assert commit.output_state(str(tmp_path / "out")) is state


def test_missing_directory_is_absent(tmp_path):
    assert commit.output_state(str(tmp_path / "nowhere")) is commit.OutputState.ABSENT


def test_complete_and_incomplete_outputs_are_refused_without_overwrite(tmp_path):
    complete, incomplete = str(tmp_path / "complete"), str(tmp_path / "incomplete")
    _write(os.path.join(complete, "manifest.json"))
    _write(os.path.join(incomplete, "train", "part-0"))
    assert "already holds a complete run" in commit.refusal(complete, overwrite=False)
    assert "no manifest.json" in commit.refusal(incomplete, overwrite=False)
    assert commit.refusal(complete, overwrite=True) is None
    assert commit.refusal(incomplete, overwrite=True) is None
    assert commit.refusal(str(tmp_path / "new"), overwrite=False) is None


def test_commit_replaces_the_old_run_without_mixing_shards(tmp_path):
    root = str(tmp_path / "out")
    # The old run had 3 shards; the new one has 2, so a plain overwrite would
    # leave the old third shard among the new ones.
    for shard in range(3):
        _write(os.path.join(root, "train", f"part-{shard}-of-3"), "old")
    _write(os.path.join(root, "manifest.json"), "old")
    _write(os.path.join(root, "stray.txt"), "old")
    staging = commit.staging_dir(root, "run2")
    for shard in range(2):
        _write(os.path.join(staging, "train", f"part-{shard}-of-2"), "new")
    _write(os.path.join(commit.staging_dir(root, "killed"), "train", "part-0"), "killed")

    commit.commit(staging, root)
    commit.clear_staging_area(root)

    assert _tree(root) == {"train/part-0-of-2": "new", "train/part-1-of-2": "new"}


def test_discard_removes_the_staging_area_once_empty(tmp_path):
    root = str(tmp_path / "out")
    staging = commit.staging_dir(root, "run1")
    _write(os.path.join(staging, "train", "part-0"))
    commit.discard(staging)
    assert os.listdir(root) == []


def test_run_ids_sort_by_start_time_and_are_unique():
    first, second = commit.new_run_id(1_000_000_000), commit.new_run_id(1_000_000_001)
    assert first < second
    assert commit.new_run_id(5) != commit.new_run_id(5)
