"""setup.py ships exactly the project's packages, as Dataflow workers receive them."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import sysconfig
import tarfile

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.slow


def test_sdist_installs_into_a_clean_virtualenv_and_imports_there(tmp_path):
    # Dataflow stages `python setup.py sdist` and pip-installs it on each worker.
    subprocess.run(
        [sys.executable, "setup.py", "-q", "sdist", "--dist-dir", str(tmp_path / "dist")],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (sdist,) = glob.glob(str(tmp_path / "dist" / "*.tar.gz"))
    with tarfile.open(sdist) as archive:
        top_level = {name.split("/")[1] for name in archive.getnames() if name.count("/") >= 2}
    assert {"pipeline", "transforms", "schemas", "trainer"} <= top_level
    assert not {"tests", "benchmarks", ".venv", "data", "out"} & top_level

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run(
        [
            python,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            sdist,
        ],
        check=True,
        capture_output=True,
        # Offline, the build backend (setuptools, wheel) comes from the test environment.
        env={**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]},
    )
    # Dependencies come from the test environment, appended after the clean venv's
    # own site-packages, so the project itself can only come from the sdist.
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    with open(f"{purelib}/test_dependencies.pth", "w") as handle:
        handle.write(sysconfig.get_paths()["purelib"] + "\n")
    # Every module of every package, as a worker may unpickle a DoFn from any.
    code = (
        "import importlib, importlib.resources, pkgutil\n"
        "import schemas.spec\n"
        "from schemas.spec import load_spec\n"
        "names = []\n"
        "for package in ('pipeline', 'transforms', 'schemas', 'trainer'):\n"
        "    path = importlib.import_module(package).__path__\n"
        "    for module in pkgutil.walk_packages(path, prefix=package + '.'):\n"
        "        names.append(importlib.import_module(module.name).__name__)\n"
        "spec = load_spec(str(importlib.resources.files('schemas') / 'taxi.yaml'))\n"
        "print(schemas.spec.__file__); print(spec.name); print(','.join(names))\n"
    )
    result = subprocess.run(
        [python, "-c", code], cwd=tmp_path, check=True, capture_output=True, text=True
    )
    module_file, name, imported = result.stdout.split()
    assert module_file.startswith(str(venv))
    assert name == "taxi"
    # Subpackages too (pipeline.workarounds): setup.py must list each of them.
    expected = {
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for package in ("pipeline", "transforms", "schemas", "trainer")
        for path in (ROOT / package).rglob("*.py")
        if path.parent != ROOT / package or path.stem != "__init__"
    }
    assert set(imported.split(",")) == expected
