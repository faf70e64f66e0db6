"""The documentation site builds with `mkdocs build --strict` (any warning fails: a broken link or anchor, a
page missing from the nav, a docstring mkdocstrings cannot render), and its pages cover what they promise."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import yaml

ROOT = os.path.join(os.path.dirname(__file__), "..")
DOCS = os.path.join(ROOT, "docs")


def _nav_files(nav) -> list[str]:
    out = []
    for entry in nav:
        for value in entry.values() if isinstance(entry, dict) else [entry]:
            out += _nav_files(value) if isinstance(value, list) else [value]
    return out


def test_docs_build_strict(tmp_path):
    mkdocs = shutil.which("mkdocs", path=os.path.dirname(sys.executable))
    res = subprocess.run([mkdocs, "build", "--strict", "-d", str(tmp_path / "site")], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, env=dict(os.environ, NO_MKDOCS_2_WARNING="1"))  # fmt: skip
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    assert "WARNING" not in res.stderr, res.stderr[-4000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for name in ("pairwise_loss", "robust_objective", "calibration_weights", "DoRAConfig", "annotate"):
        assert name in api, name  # docstrings were rendered


def test_nav_has_every_promised_page():
    with open(os.path.join(ROOT, "mkdocs.yml")) as f:
        config = yaml.load(f, Loader=yaml.BaseLoader)  # BaseLoader: mkdocs tags need no constructors
    files = _nav_files(config["nav"])
    for page in ("index.md", "quickstart.md", "concepts.md", "api.md", "classifier.md", "training.md",
                 "evaluation.md", "benchmarks.md", "results.md", "demo.md"):  # fmt: skip
        assert page in files, page
    howtos = {f for f in files if f.startswith("howto/")}
    for page in ("own-data", "target-sources", "weight-diagnostics", "multi-gpu", "lora-logging", "recipes"):
        assert f"howto/{page}.md" in howtos, page
    for f in files:
        assert os.path.exists(os.path.join(DOCS, f)), f


def test_first_page_says_it_is_not_peft_dora():
    text = open(os.path.join(DOCS, "index.md")).read()
    assert "use_dora=True" in text and "Not PEFT" in text


def test_concepts_cover_every_loss_and_objective():
    from dora.losses import LISTWISE_LOSSES, PAIRWISE_LOSSES
    from dora.objectives import OBJECTIVES

    text = open(os.path.join(DOCS, "concepts.md")).read()
    for name in [*PAIRWISE_LOSSES, *LISTWISE_LOSSES, *OBJECTIVES]:
        assert f"`{name}`" in text, f"docs/concepts.md does not explain {name!r}"
    for formula in ("wⱼ = 1 / ( s + (1 − α) (1 − cⱼ) / (γ cⱼ) )", "L_rank = L(global)"):
        assert formula in text


def test_examples_exist_and_are_referenced():
    docs = ""
    for folder, _, names in os.walk(DOCS):
        docs += "".join(open(os.path.join(folder, n)).read() for n in names if n.endswith(".md"))
    for name in ("classify.py", "train.py", "evaluate.py"):
        assert os.path.exists(os.path.join(ROOT, "examples", name)), name
        assert f"examples/{name}" in docs, name
