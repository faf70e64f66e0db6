"""docs/quickstart.md's bash blocks, run as written with MODEL set to a tiny local model (pip lines are
skipped: the test environment has the package installed)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(__file__), "..")


def bash_blocks(path: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", open(path).read(), flags=re.S)


def test_quickstart_commands_run(tmp_path, tiny_model_dir):
    blocks = bash_blocks(os.path.join(ROOT, "docs", "quickstart.md"))
    assert len(blocks) >= 2
    script = "\n".join(line for b in blocks for line in b.splitlines() if not line.startswith("pip install"))
    assert "dora classify" in script and "dora train" in script and "dora eval preference" in script
    bindir = os.path.dirname(sys.executable)
    env = dict(os.environ, MODEL=tiny_model_dir, PATH=bindir + os.pathsep + os.environ["PATH"], TQDM_DISABLE="1")
    res = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert 0.0 <= result["implicit_reward"]["accuracy"] <= 1.0
    assert (tmp_path / "classified" / "report.json").exists() and (tmp_path / "policy" / "config.json").exists()
