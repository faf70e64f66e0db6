"""scripts/gpu_check.py --dry-run, as it would run on a GPU but on this machine with a tiny model: every part is
reported (the CUDA parts as skipped), a carried wheel is installed and put first on the path, and the benchmark
table's ratios and MFU are those of the JSON's numbers, with the FLOPs formula recomputed here."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = [
    "TRL DPOTrainer",
    "DoRATrainer dora",
    "DoRATrainer mean",
    "TRL DPOTrainer liger",
    "DoRATrainer dora padding_free",
]
PEAK_TFLOPS = 0.002


def tiny_wheel(folder) -> str:
    """A one-module wheel, as ``make gpu-wheels`` leaves real ones in .whl/."""
    folder.mkdir()
    path = folder / "gpu_check_probe-0.1-py3-none-any.whl"
    info = "gpu_check_probe-0.1.dist-info"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("gpu_check_probe.py", "VALUE = 42\n")
        z.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: gpu-check-probe\nVersion: 0.1\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return str(folder)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    spec = importlib.util.spec_from_file_location("gpu_check", os.path.join(ROOT, "scripts", "gpu_check.py"))
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    argv = ["--dry-run", "--out", str(out), "--wheels", tiny_wheel(out / "wheels"), "--site", str(out / "site"),
            "--peak-tflops", str(PEAK_TFLOPS), "--runs", ",".join(RUNS)]  # fmt: skip
    assert gpu_check.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    return results, (out / "results.md").read_text(), out


def test_every_part_is_reported(dry_run):
    results, table, out = dry_run
    parts = results["parts"]
    assert list(parts) == ["install", "versions", "cuda_tests", "benchmark", "fsdp2", "zero3"]
    assert results["meta"]["dry_run"] is True
    for name in ("cuda_tests", "fsdp2", "zero3"):
        assert parts[name]["status"] == "skipped" and parts[name]["reason"] == "dry run"
        assert re.search(rf"^\| {name} \| skipped \| 0 \| dry run \|$", table, re.M)
    assert parts["install"]["status"] == "ok", parts["install"]
    assert (out / "site" / "gpu_check_probe.py").exists()
    versions = parts["versions"]
    assert versions["status"] == "ok" and versions["problems"] == []
    assert versions["pythonpath"][0] == str(out / "site")  # the installed wheels come first for every later part
    assert versions["packages"]["trl"]["version"].startswith("1.16")
    assert parts["benchmark"]["status"] == "ok"
    assert results["meta"]["elapsed_s"] < results["meta"]["budget_s"]


def flops_per_token(cfg: dict, tokens: float) -> float:
    """8 N + 16 L H Q T, with N the projections' and the LM head's weights, written out again here."""
    d, layers, heads, kv_heads = (cfg[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                                   "num_key_value_heads"))  # fmt: skip
    head_dim = d // heads
    q, k, v, o = d * d, d * kv_heads * head_dim, d * kv_heads * head_dim, d * d
    mlp = 3 * d * cfg["intermediate_size"]  # gate, up, down
    n = layers * (q + k + v + o + mlp) + d * cfg["vocab_size"]
    return 8 * n + 16 * layers * d * tokens


def test_benchmark_table_is_computed_from_the_json(dry_run):
    results, table, _ = dry_run
    ((model, bench),) = results["parts"]["benchmark"]["models"].items()
    setup, runs = bench["setup"], bench["runs"]
    assert model == "tiny" and list(runs) == RUNS
    assert runs["TRL DPOTrainer liger"]["status"] == "skipped" or importlib.util.find_spec("liger_kernel")
    ok = {n: r for n, r in runs.items() if r["status"] == "ok"}
    assert set(ok) >= {"TRL DPOTrainer", "DoRATrainer dora", "DoRATrainer mean"}
    flops = flops_per_token(setup["config"], setup["mean_sequence_tokens"])
    assert setup["flops_per_token"] == pytest.approx(flops, rel=1e-12)
    best = max((n for n in ok if n.startswith("TRL")), key=lambda n: ok[n]["tokens_per_s"])
    assert bench["trl_best"] == best
    rows = {
        m.group(1): m.group(2).split(" | ") for m in re.finditer(r"^\| ((?:TRL|DoRA)[^|]*?) \| (.*) \|$", table, re.M)
    }
    for name, r in ok.items():
        assert r["tokens_per_s"] == pytest.approx(r["steps_per_s"] * setup["batch_pairs"] * setup["tokens_per_pair"])
        _, tokens, vs_trl, peak, mem_vs_trl, mfu, first_loss = rows[name]
        assert tokens == f"{r['tokens_per_s']:.1f}" and peak == f"{r['peak_mib']:.0f}"
        assert vs_trl == f"{r['tokens_per_s'] / ok[best]['tokens_per_s']:.2f}x"
        assert mem_vs_trl == f"{r['peak_mib'] / ok[best]['peak_mib']:.2f}x"
        expected_mfu = 100 * r["tokens_per_s"] * flops / (PEAK_TFLOPS * 1e12)
        assert float(mfu.rstrip("%")) == pytest.approx(expected_mfu, abs=0.0051)
        if not name.startswith("DoRATrainer dora"):  # step 1, policy == reference: the sigmoid loss is log 2
            assert float(first_loss) == pytest.approx(math.log(2), abs=1e-4)
    dora_vs_mean = ok["DoRATrainer dora"]["tokens_per_s"] / ok["DoRATrainer mean"]["tokens_per_s"]
    assert f'"dora" / "mean" tokens/s (same settings): {dora_vs_mean:.3f}' in table
    dora = max((n for n in ok if n.startswith("DoRATrainer dora")), key=lambda n: ok[n]["tokens_per_s"])
    assert bench["dora_best"] == dora
    tokens, memory = ok[dora]["tokens_per_s"] / ok[best]["tokens_per_s"], ok[dora]["peak_mib"] / ok[best]["peak_mib"]
    assert (
        f"at its best ({dora}) against TRL at its best ({best}): tokens/s {tokens:.2f}x, peak memory {memory:.2f}x"
        in table
    )


def test_a_hung_part_is_killed_with_its_detached_children(tmp_path):
    """torch's launcher starts workers in sessions of their own: past its timeout a part's whole tree is killed
    (a worker left alive would keep the output pipe open and hang the check)."""
    import subprocess
    import sys
    import time

    import psutil

    spec = importlib.util.spec_from_file_location("gpu_check", os.path.join(ROOT, "scripts", "gpu_check.py"))
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    c = gpu_check.Check(gpu_check.parse(["--dry-run", "--out", str(tmp_path)]), [])
    worker = "import time; time.sleep(600)"
    launcher = (f"import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', {worker!r}], "
                "start_new_session=True); print(p.pid, flush=True); time.sleep(600)")  # fmt: skip
    os.rmdir(c.work)  # the check's work folder, unused here
    rc, out = c.run([sys.executable, "-c", launcher], timeout=3, label="hung")
    assert rc is None
    pid = int(out.split()[0])
    for _ in range(50):  # the kill is asynchronous: wait for the worker to be reaped or become a zombie
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            break
        time.sleep(0.1)
    else:
        subprocess.run(["kill", "-9", str(pid)])
        raise AssertionError("the detached worker outlived the part's timeout")
