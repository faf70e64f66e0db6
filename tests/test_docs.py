"""The documentation site builds with `mkdocs build --strict` (any warning fails), and the pages it links exist."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(__file__), "..")


def test_docs_build_strict(tmp_path):
    mkdocs = shutil.which("mkdocs", path=os.path.dirname(sys.executable))
    res = subprocess.run([mkdocs, "build", "--strict", "-d", str(tmp_path / "site")], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, env=dict(os.environ, NO_MKDOCS_2_WARNING="1"))
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    assert (tmp_path / "site" / "api" / "index.html").exists()
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "pairwise_loss" in api and "calibration_weights" in api  # docstrings were rendered


def test_first_page_says_it_is_not_peft_dora():
    text = open(os.path.join(ROOT, "docs", "index.md")).read()
    assert "use_dora=True" in text and "Not PEFT" in text


def test_examples_exist_and_are_referenced():
    docs = "".join(open(os.path.join(ROOT, "docs", f)).read() for f in os.listdir(os.path.join(ROOT, "docs"))
                   if f.endswith(".md"))
    for name in ("classify.py", "train.py", "evaluate.py"):
        assert os.path.exists(os.path.join(ROOT, "examples", name)), name
        assert f"examples/{name}" in docs, name
