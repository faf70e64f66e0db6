"""The GPU check: one prepared run on a lent GPU machine (docs/benchmarks.md, "On a GPU", says how to start it).

    python scripts/gpu_check.py [--dry-run] [--out DIR] [--wheels DIR] [--budget SECONDS] [--parts a,b]

Parts, in order, each in its own process with its own timeout (a hung part is killed with its children, and
the next part runs):

    install     the carried wheels (``make gpu-wheels``) into a target folder put first on PYTHONPATH
    versions    the versions the run uses (required: transformers >= 5.23, trl 1.16, datasets, peft,
                accelerate; optional: liger-kernel, deepspeed), the GPU's name, ``import dora``
    cuda_tests  ``pytest -m cuda tests/test_cuda.py``
    benchmark   scripts/gpu_bench.py: TRL's DPOTrainer (with and without liger / padding_free) and DoRATrainer
                ("mean", "dora") on one model and batch: tokens/s, peak memory, MFU
    fsdp2       scripts/gpu_smoke.py under accelerate, FSDP2 on one process
    zero3       scripts/gpu_smoke.py under accelerate, DeepSpeed ZeRO-3 on one process

Everything is written to ``results.json`` and ``results.md`` in ``--out`` (default ``$OUT``) after each part,
and the whole output to ``gpu_check.log``. ``--dry-run``: the same parts on this machine with a tiny model;
the CUDA parts are reported as skipped. The whole run stays inside ``--budget`` seconds (default 450).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from gpu_bench import RUNS, peak_flops  # noqa: E402  (scripts/ is not a package)

PARTS = ("install", "versions", "cuda_tests", "benchmark", "fsdp2", "zero3")
# the most a part may take, and the least kept for it while earlier parts run (seconds)
TIMEOUT = {"install": 120, "versions": 90, "cuda_tests": 150, "benchmark": 330, "fsdp2": 120, "zero3": 150}
KEEP = {"install": 0, "versions": 20, "cuda_tests": 40, "benchmark": 90, "fsdp2": 45, "zero3": 60}
REQUIRED = {
    "torch": "2.4",
    "transformers": "5.23",
    "trl": "1.16",
    "datasets": "5.2",
    "peft": "0.21",
    "accelerate": "1.15",
    "safetensors": "0.4",
    "pyarrow": "24",  # datasets 5.2's least
}
OPTIONAL = ("liger_kernel", "deepspeed", "pytest")


class Check:
    """The run's state: options, deadline, results so far, and where they are written."""

    def __init__(self, args, argv: list[str]):
        self.args = args
        self.start = time.monotonic()
        self.results = {"meta": {"dry_run": args.dry_run, "budget_s": args.budget, "argv": argv}, "parts": {}}
        os.makedirs(args.out, exist_ok=True)
        self.log = open(os.path.join(args.out, "gpu_check.log"), "a")
        self.env = dict(
            os.environ,
            TOKENIZERS_PARALLELISM="false",
            HF_HUB_OFFLINE="1",
            TRL_EXPERIMENTAL_SILENCE="1",
            TQDM_DISABLE="1",
            PYTHONUNBUFFERED="1",
            WANDB_DISABLED="true",
        )
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
        self.work = tempfile.mkdtemp(prefix="gpu_check_")

    def left(self) -> float:
        return self.args.budget - (time.monotonic() - self.start)

    def timeout(self, part: str) -> float:
        """The part's own limit, less what the parts after it keep."""
        later = PARTS[PARTS.index(part) + 1 :]
        keep = sum(KEEP[p] for p in later if p in self.args.parts)
        return max(0.0, min(TIMEOUT[part], self.left() - keep))

    def run(self, cmd: list[str], timeout: float, label: str) -> tuple[int | None, str]:
        """Run ``cmd`` in its own process group; past ``timeout`` the group is killed. Returns (rc or None, output)."""
        self.log.write(f"\n===== {label}: {' '.join(cmd)}\n")
        self.log.flush()
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=max(1.0, timeout))
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            kill_tree(proc)
            try:
                out, _ = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:  # a survivor still holds the pipe: give up on its output
                out = "(output lost: a process of the part outlived the kill)"
            rc = None
        self.log.write(out)
        self.log.flush()
        return rc, out

    def record(self, part: str, status: str, seconds: float, **info) -> None:
        self.results["parts"][part] = {"status": status, "seconds": round(seconds, 1), **info}
        self.write()

    def write(self) -> None:
        self.results["meta"]["elapsed_s"] = round(time.monotonic() - self.start, 1)
        with open(os.path.join(self.args.out, "results.json"), "w") as f:
            json.dump(self.results, f, indent=1)
        with open(os.path.join(self.args.out, "results.md"), "w") as f:
            f.write(markdown(self.results))

    @property
    def cuda(self) -> bool:
        return bool(self.results["parts"].get("versions", {}).get("cuda"))


def kill_tree(proc: subprocess.Popen) -> None:
    """Kill a part's process, its group and every descendant: torch's launcher starts its workers in sessions of
    their own, which a kill of the group would miss (and they would keep the output pipe open)."""
    try:
        import psutil

        family = psutil.Process(proc.pid).children(recursive=True)
    except Exception:  # noqa: BLE001  no psutil, or the process is gone: the group kill below still runs
        family = []
    for p in family:
        with contextlib.suppress(Exception):
            p.kill()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def tail(text: str, n: int = 2500) -> str:
    return text[-n:]


# --------------------------------------------------------------------------- install and versions


def part_install(c: Check) -> None:
    wheels = c.args.wheels
    files = sorted(f for f in os.listdir(wheels) if f.endswith(".whl")) if wheels and os.path.isdir(wheels) else []
    if not files:
        return c.record("install", "skipped", 0, reason=f"no wheels in {wheels}" if wheels else "no --wheels folder")
    site = c.args.site
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "-q",
        "--no-index",
        "--no-deps",
        "--no-compile",
        "--no-cache-dir",
        "--upgrade",
        "--target",
        site,
        *(os.path.join(wheels, f) for f in files),
    ]
    t = time.monotonic()
    rc, out = c.run(cmd, c.timeout("install"), "install")
    if rc == 0:
        c.env["PYTHONPATH"] = os.pathsep.join([site, c.env["PYTHONPATH"]])
    mib = sum(os.path.getsize(os.path.join(wheels, f)) for f in files) / 2**20
    status = "ok" if rc == 0 else "timeout" if rc is None else "failed"
    c.record(
        "install", status, time.monotonic() - t, wheels=files, wheels_mib=round(mib, 1), target=site, output=tail(out)
    )


def probe_versions(import_optional: bool = True) -> dict:
    """Run in the part's own process: what this Python imports, and from where (the dry run reads the optional
    packages' versions without importing them, which takes long on a small machine)."""
    import importlib
    import importlib.metadata as md
    import importlib.util

    from packaging.version import Version

    found, problems = {}, []
    for name in (*REQUIRED, *OPTIONAL):
        try:
            if name in OPTIONAL and not import_optional:
                spec = importlib.util.find_spec(name)
                found[name] = {"version": md.version(name.replace("_", "-")) if spec else None, "imported": False}
                continue
            mod = importlib.import_module(name)
            found[name] = {"version": md.version(name.replace("_", "-")), "path": os.path.dirname(mod.__file__)}
        except Exception as e:  # noqa: BLE001  a package that fails to import is a finding, not a crash
            found[name] = {"version": None, "error": f"{type(e).__name__}: {e}"[:300]}
    for name, least in REQUIRED.items():
        v = found[name]["version"]
        if v is None or Version(v) < Version(least) or (name == "trl" and Version(v).release[:2] != (1, 16)):
            problems.append(f"{name} {v} (needs {'1.16.x' if name == 'trl' else '>= ' + least})")
    import torch

    cuda = torch.cuda.is_available()
    info = {
        "packages": found,
        "problems": problems,
        "python": sys.version.split()[0],
        "cuda": cuda,
        "torch_cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "bf16": bool(cuda and torch.cuda.is_bf16_supported()),
        "pythonpath": [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p],
    }
    if cuda:
        free, total = torch.cuda.mem_get_info()
        info.update(capability=list(torch.cuda.get_device_capability(0)), gpu_mib=round(total / 2**20))
    try:
        import dora  # noqa: F401

        info["dora"] = os.path.dirname(dora.__file__)
    except Exception as e:  # noqa: BLE001
        problems.append(f"import dora: {type(e).__name__}: {e}"[:300])
    return info


def part_versions(c: Check) -> None:
    t = time.monotonic()
    cmd = [sys.executable, __file__, "--probe-versions", *(["--dry-run"] if c.args.dry_run else [])]
    rc, out = c.run(cmd, c.timeout("versions"), "versions")
    line = next((x for x in out.splitlines() if x.startswith("VERSIONS ")), None)
    if rc != 0 or line is None:
        return c.record("versions", "timeout" if rc is None else "failed", time.monotonic() - t, output=tail(out))
    info = json.loads(line[len("VERSIONS ") :])
    c.results["meta"]["gpu"] = info["gpu"]
    c.record("versions", "failed" if info["problems"] else "ok", time.monotonic() - t, **info)


# --------------------------------------------------------------------------- CUDA tests


def part_cuda_tests(c: Check) -> None:
    if c.args.dry_run or not c.cuda:
        return c.record("cuda_tests", "skipped", 0, reason="dry run" if c.args.dry_run else "no CUDA device")
    xml = os.path.join(c.work, "cuda_tests.xml")
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-m",
        "cuda",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/test_cuda.py",
        f"--junitxml={xml}",
    ]
    t = time.monotonic()
    rc, out = c.run(cmd, c.timeout("cuda_tests"), "cuda_tests")
    if not os.path.exists(xml):
        return c.record("cuda_tests", "timeout" if rc is None else "failed", time.monotonic() - t, output=tail(out))
    cases = []
    for case in ET.parse(xml).getroot().iter("testcase"):
        bad = next((e for e in case if e.tag in ("failure", "error", "skipped")), None)
        outcome = "passed" if bad is None else {"failure": "failed", "error": "failed"}.get(bad.tag, "skipped")
        note = "" if bad is None else (bad.get("message") or "")[:400]
        cases.append(
            {"name": case.get("name"), "outcome": outcome, "seconds": float(case.get("time", 0)), "note": note}
        )
    counts = {k: sum(x["outcome"] == k for x in cases) for k in ("passed", "failed", "skipped")}
    status = "ok" if rc == 0 and cases and counts["passed"] == len(cases) else "failed"
    c.record("cuda_tests", status, time.monotonic() - t, **counts, tests=cases, output=tail(out, 4000))


# --------------------------------------------------------------------------- benchmark


def bench_runs(c: Check, folder: str, model: str, names: list[str], deadline: float) -> tuple[dict | None, dict]:
    """Each run in a fresh process on CUDA (peak memory is then its own), on the dry run all in one; the first
    process builds the model's assets. Returns (the setup, or None if no process got that far; the runs)."""
    groups = [names] if c.args.dry_run else [[n] for n in names]
    setup, out = None, {}
    rows = c.args.batch_size * (c.args.steps + 1)
    for group in groups:
        left = deadline - time.monotonic()
        if left < 20:
            out.update({n: {"status": "skipped", "reason": "time budget"} for n in group})
            continue
        cmd = [sys.executable, os.path.join(HERE, "gpu_bench.py"), "run", folder, *group, "--steps", str(c.args.steps),
               "--warmup", str(c.args.warmup), "--batch-size", str(c.args.batch_size), "--build", model,
               "--seq-len", str(c.args.seq_len), "--rows", str(rows)]  # fmt: skip
        limit = left if c.args.dry_run else min(left, c.args.run_timeout)  # one hung run cannot take the rest
        rc, text = c.run(cmd, limit, f"benchmark {model}: {', '.join(group)}")
        for line in text.splitlines():
            if line.startswith("SETUP ") and setup is None:
                setup = json.loads(line[len("SETUP ") :])
            elif line.startswith("RESULT "):
                res = json.loads(line[len("RESULT ") :])
                out[res.pop("name")] = res
        for n in group:
            out.setdefault(n, {"status": "timeout" if rc is None else "failed", "output": tail(text, 1500)})
    return setup, out


def bench_model(c: Check, model: str, names: list[str], deadline: float) -> dict:
    """The runs on ``model``; the summary with ratios to TRL's fastest run and MFU."""
    folder = os.path.join(c.work, f"bench_{model}")
    os.makedirs(folder, exist_ok=True)
    setup, runs = bench_runs(c, folder, model, names, deadline)
    if setup is None:
        return {"status": "failed", "runs": runs}
    setup.update(batch_pairs=c.args.batch_size, steps=c.args.steps, warmup=c.args.warmup)
    gpu = c.results["meta"].get("gpu")
    peak = c.args.peak_tflops * 1e12 if c.args.peak_tflops else peak_flops(gpu)
    return {"status": "ok", "setup": setup, "peak_flops": peak, "runs": runs, **summarise(runs, setup, peak)}


def summarise(runs: dict, setup: dict, peak: float | None) -> dict:
    """TRL's fastest run and DoRATrainer "dora"'s, each run's ratios to TRL's fastest, MFU, and "dora" / "mean"
    tokens/s with the same settings (the runs named "DoRATrainer dora" and "DoRATrainer mean")."""
    ok = {n: r for n, r in runs.items() if r.get("status") == "ok"}

    def fastest(kind, objective=None):
        names = [n for n in ok if RUNS[n][0] == kind and (objective is None or RUNS[n][1] == objective)]
        return max(names, key=lambda n: ok[n]["tokens_per_s"]) if names else None

    best, dora = fastest("trl"), fastest("dora", "dora")
    ratios = {}
    for n, r in ok.items():
        ratios[n] = {
            "tokens_vs_trl": r["tokens_per_s"] / ok[best]["tokens_per_s"] if best else None,
            "memory_vs_trl": r["peak_mib"] / ok[best]["peak_mib"] if best else None,
            "mfu": r["tokens_per_s"] * setup["flops_per_token"] / peak if peak else None,
        }
    d, m = ok.get("DoRATrainer dora"), ok.get("DoRATrainer mean")
    return {
        "trl_best": best,
        "dora_best": dora,
        "ratios": ratios,
        "dora_vs_mean": d["tokens_per_s"] / m["tokens_per_s"] if d and m else None,
    }


def part_benchmark(c: Check) -> None:
    t = time.monotonic()
    deadline = t + c.timeout("benchmark")
    names = [n for n in RUNS if n in c.args.runs]
    models = {c.args.model: bench_model(c, c.args.model, names, deadline)}
    large = c.args.large_model
    if large != "none" and deadline - time.monotonic() > c.args.large_after:  # the larger model if time allows
        main3 = [n for n in ("TRL DPOTrainer", "DoRATrainer dora", "DoRATrainer mean") if n in names]
        models[large] = bench_model(c, large, main3, deadline)
    status = "ok" if all(m["status"] == "ok" for m in models.values()) else "failed"
    if status == "ok" and any(
        r.get("status") in ("failed", "timeout") for m in models.values() for r in m["runs"].values()
    ):
        status = "partial"
    c.record(
        "benchmark",
        status,
        time.monotonic() - t,
        models=models,
        flops_formula="8 N + 16 L H Q T per token (scripts/gpu_bench.py)",
    )


# --------------------------------------------------------------------------- FSDP2 and ZeRO-3 smoke steps

ACCELERATE = {  # the engine's part of the accelerate config (the rest is written in part_smoke)
    "fsdp2": """distributed_type: FSDP
fsdp_config:
  fsdp_version: 2
  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP
  fsdp_reshard_after_forward: true
  fsdp_state_dict_type: FULL_STATE_DICT
  fsdp_cpu_ram_efficient_loading: true
""",
    "zero3": """distributed_type: DEEPSPEED
deepspeed_config:
  zero_stage: 3
  zero3_init_flag: true
  zero3_save_16bit_model: true
  offload_optimizer_device: none
  offload_param_device: none
""",
}


def part_smoke(c: Check, part: str) -> None:
    if (c.args.dry_run or not c.cuda) and not c.args.smoke_cpu:
        return c.record(part, "skipped", 0, reason="dry run" if c.args.dry_run else "no CUDA device")
    if part == "zero3" and not c.results["parts"].get("versions", {}).get("packages", {}).get("deepspeed", {}).get(
        "version"
    ):
        return c.record(part, "skipped", 0, reason="deepspeed not installed (carry its wheel: make gpu-wheels)")
    t = time.monotonic()
    folder = os.path.join(c.work, "smoke_model")
    if not os.path.exists(os.path.join(folder, "setup.json")):
        cmd = [
            sys.executable,
            os.path.join(HERE, "gpu_bench.py"),
            "assets",
            folder,
            "--model",
            "tiny",
            "--seq-len",
            "64",
            "--rows",
            "16",
        ]
        c.run(cmd, min(60, c.timeout(part)), "smoke assets")
    processes = 2 if c.args.smoke_cpu else 1
    precision = '"no"' if c.args.smoke_cpu else "bf16"  # quoted: YAML reads a bare no as false
    cfg = os.path.join(c.work, f"{part}.yaml")
    with open(cfg, "w") as f:
        f.write(
            f"compute_environment: LOCAL_MACHINE\nnum_machines: 1\nnum_processes: {processes}\nmachine_rank: 0\n"
            f"mixed_precision: {precision}\nuse_cpu: {str(c.args.smoke_cpu).lower()}\n"
            f"rdzv_backend: static\nsame_network: true\nmain_training_function: main\n{ACCELERATE[part]}"
        )
    result = os.path.join(c.work, f"{part}.json")
    c.env["GPU_SMOKE_DIR"] = os.path.join(c.work, f"{part}_runs")
    if (
        not c.args.smoke_cpu
    ):  # ops DeepSpeed builds go to a fresh folder: a killed build leaves a lock that hangs the next
        c.env["TORCH_EXTENSIONS_DIR"] = os.path.join(c.work, "torch_extensions")
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        cfg,
        os.path.join(HERE, "gpu_smoke.py"),
        folder,
        result,
    ]
    rc, out = c.run(cmd, c.timeout(part), part)
    info = json.load(open(result)) if os.path.exists(result) else {}
    good = rc == 0 and info.get("checks") and all(info["checks"].values())
    status = "ok" if good else "timeout" if rc is None else "failed"
    c.record(part, status, time.monotonic() - t, processes=processes, **info, output=tail(out))


# --------------------------------------------------------------------------- the table


def fmt(x, spec: str, suffix: str = "") -> str:
    return "n/a" if x is None else f"{x:{spec}}{suffix}"


def bench_table(model: str, m: dict) -> list[str]:
    if m.get("status") != "ok":
        return [f"**{model}**: {m.get('status')}", ""]
    s = m["setup"]
    lines = [
        f"**{model}** (its config, random weights): sequences up to {s['seq_len']} tokens "
        f"(mean {s['mean_sequence_tokens']:.0f}), {s['batch_pairs']} pairs per step, {s['steps']} steps "
        f"({s['warmup']} warm-up), N = {s['matmul_params'] / 1e6:.1f}M matmul weights, "
        f"{s['flops_per_token'] / 1e9:.3f} GFLOP per token; TRL best: {m['trl_best']}",
        "",
        "| trainer | settings | tokens/s | vs TRL best | peak memory (MiB) | vs TRL best | MFU | first loss |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in m["runs"].items():
        settings = ", ".join(k for k, v in RUNS[name][2].items() if v) or "-"
        if r.get("status") != "ok":
            lines.append(
                f"| {name} | {settings} | {r.get('status')}: {r.get('reason', r.get('error', ''))[:80]} | | | | | |"
            )
            continue
        q = m["ratios"][name]
        mfu = None if q["mfu"] is None else 100 * q["mfu"]
        lines.append(
            f"| {name} | {settings} | {r['tokens_per_s']:.1f} | {fmt(q['tokens_vs_trl'], '.2f', 'x')} "
            f"| {r['peak_mib']:.0f} | {fmt(q['memory_vs_trl'], '.2f', 'x')} | {fmt(mfu, '.2f', '%')} "
            f"| {fmt(r['first_loss'], '.4f')} |"
        )
    lines += ["", f'"dora" / "mean" tokens/s (same settings): {fmt(m["dora_vs_mean"], ".3f")}', ""]
    if m["trl_best"] and m["dora_best"]:
        q = m["ratios"][m["dora_best"]]
        lines += [
            f'DoRATrainer "dora" at its best ({m["dora_best"]}) against TRL at its best ({m["trl_best"]}): '
            f"tokens/s {q['tokens_vs_trl']:.2f}x, peak memory {q['memory_vs_trl']:.2f}x",
            "",
        ]
    return lines


def markdown(results: dict) -> str:
    meta, parts = results["meta"], results["parts"]
    pk = parts.get("versions", {}).get("packages", {})
    versions = ", ".join(
        f"{n} {pk[n]['version']}"
        for n in ("torch", "transformers", "trl", "peft", "accelerate", "deepspeed", "liger_kernel")
        if pk.get(n, {}).get("version")
    )
    lines = [
        f"# GPU check{' (dry run)' if meta['dry_run'] else ''}",
        "",
        f"GPU: {meta.get('gpu') or 'none'}; {versions or 'versions not read'}; {meta.get('elapsed_s')} s of "
        f"{meta['budget_s']} s.",
        "",
        "| part | status | seconds | note |",
        "|---|---|---|---|",
    ]
    for name, p in parts.items():
        note = p.get("reason", "")
        if name == "cuda_tests" and "passed" in p:
            note = f"{p['passed']} passed, {p['failed']} failed, {p['skipped']} skipped"
            failed = [x["name"] for x in p.get("tests", []) if x["outcome"] != "passed"]
            note += f" ({', '.join(failed)})" if failed else ""
        elif name == "versions" and p.get("problems"):
            note = "; ".join(p["problems"])
        elif name in ("fsdp2", "zero3") and "checks" in p:
            note = ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in p["checks"].items())
        if p["status"] in ("failed", "timeout") and not note:  # the error, or the output's last line
            last = [x for x in (p.get("error") or p.get("output") or "").splitlines() if x.strip()]
            note = last[-1].strip()[:200].replace("|", "/") if last else ""
        lines.append(f"| {name} | {p['status']} | {p['seconds']} | {note} |")
    lines.append("")
    for model, m in parts.get("benchmark", {}).get("models", {}).items():
        lines += bench_table(model, m)
    if "benchmark" in parts:
        lines.append(
            "MFU: tokens/s x (8 N + 16 L H Q T) FLOPs per token / the GPU's dense bf16 peak "
            "(scripts/gpu_bench.py's docstring)."
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- command line


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="this machine, a tiny model, CUDA parts skipped")
    p.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_out", help="results folder (default $OUT)")
    p.add_argument("--wheels", default=None, help="folder of wheels to install first (default .whl, not on --dry-run)")
    p.add_argument("--site", default=os.path.join(tempfile.gettempdir(), "dora_site"), help="where they go")
    p.add_argument("--budget", type=float, default=None, help="seconds for the whole check (450; dry run 300)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--runs", default=",".join(RUNS), help="benchmark runs (scripts/gpu_bench.py RUNS), comma-separated")
    p.add_argument("--model", default=None, help="benchmark model (qwen2.5-0.5b; dry run: tiny)")
    p.add_argument("--large-model", default=None, help="a second model if time allows (qwen2.5-1.5b; dry run: none)")
    p.add_argument("--large-after", type=float, default=100, help="seconds the benchmark must have left for it")
    p.add_argument("--seq-len", type=int, default=None, help="sequence length (1024; dry run 48)")
    p.add_argument("--batch-size", type=int, default=None, help="pairs per step (8; dry run 2)")
    p.add_argument("--steps", type=int, default=None, help="steps per run (12; dry run 3)")
    p.add_argument("--warmup", type=int, default=None, help="steps left out of the timing (4; dry run 1)")
    p.add_argument("--run-timeout", type=float, default=150, help="seconds one benchmark run may take")
    p.add_argument("--peak-tflops", type=float, default=None, help="bf16 peak for MFU (default: by the GPU's name)")
    p.add_argument("--smoke-cpu", action="store_true", help="run the FSDP2 / ZeRO-3 smoke on two CPU processes")
    p.add_argument("--probe-versions", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    dry = args.dry_run
    defaults = dict(
        budget=300 if dry else 450,
        model="tiny" if dry else "qwen2.5-0.5b",
        large_model="none" if dry else "qwen2.5-1.5b",
        seq_len=48 if dry else 1024,
        batch_size=2 if dry else 8,
        steps=3 if dry else 12,
        warmup=1 if dry else 4,
    )
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.wheels is None and not dry:
        args.wheels = os.path.join(ROOT, ".whl")
    args.parts = [x for x in args.parts.split(",") if x]
    args.parts += [x for x in ("install", "versions") if x not in args.parts]  # a rerun's machine starts bare
    args.runs = [x for x in args.runs.split(",") if x]
    for bad in [x for x in args.parts if x not in PARTS] + [x for x in args.runs if x not in RUNS]:
        p.error(f"unknown part or run {bad!r}; parts: {', '.join(PARTS)}; runs: {', '.join(RUNS)}")
    if args.warmup + 2 > args.steps:
        p.error("--steps must exceed --warmup by at least 2 (two timed step ends)")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    if args.probe_versions:
        print("VERSIONS " + json.dumps(probe_versions(import_optional=not args.dry_run)), flush=True)
        return 0
    c = Check(args, sys.argv[1:] if argv is None else list(argv))
    steps = {
        "install": part_install,
        "versions": part_versions,
        "cuda_tests": part_cuda_tests,
        "benchmark": part_benchmark,
        "fsdp2": lambda c: part_smoke(c, "fsdp2"),
        "zero3": lambda c: part_smoke(c, "zero3"),
    }
    for part in PARTS:
        if part not in args.parts:
            continue
        if c.timeout(part) < 5:
            c.record(part, "skipped", 0, reason="time budget")
            continue
        try:
            steps[part](c)
        except Exception as e:  # noqa: BLE001  the driver reports a broken part and goes on to the next
            c.record(part, "failed", 0, error=f"{type(e).__name__}: {e}"[:2000])
        print(f"{part}: {c.results['parts'][part]['status']} ({c.results['parts'][part]['seconds']} s)", flush=True)
    c.write()
    shutil.rmtree(c.work, ignore_errors=True)  # the models, rows, checkpoints and trainers' output folders
    print(markdown(c.results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
