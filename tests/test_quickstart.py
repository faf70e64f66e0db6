"""docs/quickstart.md runs as written: its bash blocks with MODEL set to a tiny local model (pip lines are
skipped: the test environment has the package installed), then its Python block with the Hub id replaced by
the same tiny model."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(__file__), "..")
HUB_ID = "Qwen/Qwen2.5-0.5B-Instruct"


def blocks(path: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", open(path).read(), flags=re.S)


def test_quickstart_commands_run(tmp_path, tiny_model_dir):
    page = os.path.join(ROOT, "docs", "quickstart.md")
    script = "\n".join(line for b in blocks(page, "bash") for line in b.splitlines() if not line.startswith("pip "))
    assert "dora classify" in script and "dora train --config" in script and "dora eval preference" in script
    assert HUB_ID in script  # the default a user gets; the test swaps it through $MODEL
    bindir = os.path.dirname(sys.executable)
    env = dict(os.environ, MODEL=tiny_model_dir, PATH=bindir + os.pathsep + os.environ["PATH"], TQDM_DISABLE="1",
               OMP_NUM_THREADS="1")  # fmt: skip
    res = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert 0.0 <= result["implicit_reward"]["accuracy"] <= 1.0
    report = json.loads((tmp_path / "classified" / "report.json").read_text())
    assert report["n_rows"] == 400 and report["target_sources"] == ["human"]
    assert (tmp_path / "policy" / "config.json").exists()

    (python,) = blocks(page, "python")
    assert HUB_ID in python
    res = subprocess.run([sys.executable, "-c", python.replace(HUB_ID, tiny_model_dir)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
