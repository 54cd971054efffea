"""The run manifest: what a preprocessing run read, wrote and counted.

`OUTPUT/manifest.json` is written last; its presence marks a complete output.
Paths go through Beam's FileSystems so local disks and gs:// behave alike.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform

from apache_beam.io.filesystems import FileSystems

from pipeline.layout import MANIFEST_NAME

__all__ = ["MANIFEST_NAME", "MANIFEST_VERSION"]

MANIFEST_VERSION = 1
_PACKAGES = (
    "apache-beam",
    "tensorflow",
    "tensorflow-transform",
    "tfx-bsl",
    "tensorflow-metadata",
    "pyarrow",
    "numpy",
    "pydantic",
)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in _PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def list_files(pattern: str) -> list[str]:
    """Sorted paths matching a FileSystems glob; empty when nothing matches."""
    try:
        return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    except Exception:  # noqa: BLE001 - BeamIOError when the directory does not exist
        return []


def directory_fingerprint(directory: str) -> str:
    """SHA-256 over the relative paths and bytes of every file below `directory`."""
    digest = hashlib.sha256()
    root = directory.rstrip("/") + "/"
    for path in list_files(root + "**"):
        digest.update(path[len(root) :].encode("utf-8") + b"\0")
        with FileSystems.open(path) as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def file_fingerprint(path: str) -> str:
    """ "sha256:<hex>" of a local file's bytes; for files on a remote filesystem,
    the checksum that filesystem keeps ("checksum:<value>"), which costs no download."""
    if "://" in path:
        return f"checksum:{FileSystems.checksum(path)}"
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def join(directory: str, *parts: str) -> str:
    return FileSystems.join(directory, *parts)


def write_json(path: str, document: dict) -> None:
    with FileSystems.create(path) as handle:
        handle.write(json.dumps(document, indent=2, sort_keys=True).encode("utf-8") + b"\n")


def read_json(path: str) -> dict:
    with FileSystems.open(path) as handle:
        return json.loads(handle.read().decode("utf-8"))
