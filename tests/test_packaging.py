"""setup.py ships exactly the project's packages, as Dataflow workers receive them, and
installs the console commands."""

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
    assert {"pipeline", "transforms", "schemas", "trainer", "serving"} <= top_level
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
        "for package in ('pipeline', 'transforms', 'schemas', 'trainer', 'serving'):\n"
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
        for package in ("pipeline", "transforms", "schemas", "trainer", "serving")
        for path in (ROOT / package).rglob("*.py")
        if path.parent != ROOT / package or path.stem != "__init__"
    }
    assert set(imported.split(",")) == expected

    # The console commands: installed, each a function that takes no arguments,
    # and one of them answers --help (without TensorFlow: it is quick).
    code = (
        "import importlib.metadata, inspect\n"
        "for entry in importlib.metadata.distribution('beam-tft-preprocess').entry_points:\n"
        "    if entry.group == 'console_scripts':\n"
        "        main = entry.load()\n"
        "        required = [p for p in inspect.signature(main).parameters.values()\n"
        "                    if p.default is inspect.Parameter.empty]\n"
        "        print(entry.name, entry.value, 'no-arguments' if not required else required)\n"
    )
    result = subprocess.run(
        [python, "-c", code], cwd=tmp_path, check=True, capture_output=True, text=True
    )
    commands = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()}
    assert commands == {name: [target, "no-arguments"] for name, target in CONSOLE_COMMANDS.items()}
    for name in CONSOLE_COMMANDS:
        assert os.access(venv / "bin" / name, os.X_OK), name
    result = subprocess.run(
        [str(venv / "bin" / "beam-tft-preprocess"), "--help"],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: beam-tft-preprocess ")
    assert "  --spec SPEC " in result.stdout and "  --output_dir OUTPUT_DIR" in result.stdout


# What setup.py's console_scripts install, command -> module:function.
CONSOLE_COMMANDS = {
    "beam-tft-preprocess": "pipeline.preprocess:main",
    "beam-tft-stream": "pipeline.stream:main",
    "beam-tft-materialize": "pipeline.materialize:main",
    "beam-tft-report": "pipeline.report:main",
    "beam-tft-verify-skew": "pipeline.verify_skew:main",
    "beam-tft-compare-runs": "pipeline.compare_runs:main",
    "beam-tft-sample-data": "pipeline.sample_data:main",
    "beam-tft-replay": "pipeline.replay:main",
    "beam-tft-check-spec": "schemas.spec:main",
    "beam-tft-infer-spec": "schemas.infer:main",
    "beam-tft-train": "trainer.task:main",
    "beam-tft-instances": "trainer.instances:main",
    "beam-tft-predict": "trainer.predict:main",
    "beam-tft-serve": "serving.service:main",
}
