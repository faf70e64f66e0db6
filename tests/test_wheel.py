"""The package builds as a wheel from a checkout (what README's install from a built wheel does), and the wheel
holds every module of the package and the `dora` command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

ROOT = os.path.join(os.path.dirname(__file__), "..")


def test_wheel_builds_with_every_module_and_the_command(tmp_path):
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    src = tmp_path / "src"
    for name in files:  # the tracked files only: a build in the checkout would leave build/ and egg-info there
        if os.path.isfile(os.path.join(ROOT, name)):
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(os.path.join(ROOT, name), src / name)
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"),
         str(src)], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("dora_align-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {n for n in files if n.startswith("dora/") and n.endswith(".py")}
    assert modules and modules <= names, sorted(modules - names)  # every module of the checkout is in the wheel
    (entry,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "dora = dora.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
    (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    assert "Name: dora-align" in zipfile.ZipFile(wheel).read(meta).decode()
