"""Iterative DoRA: for r = 1..R, (1) sample k responses per prompt from the current policy, (2) label pairs
with a judge, (3) add them to the pool as source ``policy_r<r>``, (4) refit the weights on the grown pool,
(5) train one round of DoRATrainer from the current policy. The reference is the round-0 policy
(``reference="fixed"``) or the policy the round starts from (``"previous"``).

Each finished round leaves ``output_dir/round_<r>/`` with ``policy/`` (a full model; with LoRA the round's
adapter merged in), ``pool.jsonl`` and ``report.json``, written last: a run started again with the same
``output_dir`` resumes after the last round whose report exists, and ends with the same policy as a run
that was never stopped (each stage seeds itself from ``seed`` and the round number).
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import random
import shutil
import time
import types
from collections import Counter
from dataclasses import asdict, dataclass

import torch
from accelerate.utils import broadcast_object_list
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer

from dora.config import DoRAConfig
from dora.data import check_local_path
from dora.eval.preference import implicit_reward_accuracy, load_causal_lm, win_rate_from_scores
from dora.iterate.config import IterateConfig
from dora.iterate.generate import process_state, sample_responses, sample_responses_distributed
from dora.iterate.judge import judge_distributed, load_judge, make_pairs
from dora.iterate.report import round_summary, write_run_report
from dora.iterate.weights import fit_weights
from dora.trainer import DoRATrainer

logger = logging.getLogger(__name__)

__all__ = ["iterate", "validate_pool", "read_jsonl"]

POOL_COLUMNS = ("prompt", "chosen", "rejected", "source")


# --------------------------------------------------------------------------- data


class FileRows(list):
    """Rows read from a jsonl file, with the file and the 1-based line each came from (errors name them)."""

    path: str = ""
    lines: list[int] = []


def read_jsonl(path: str) -> list[dict]:
    rows = FileRows()
    rows.path, rows.lines = path, []
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(f"{path}, line {line_no}: not UTF-8 text") from None
            if line.strip():
                try:
                    rows.append(json.loads(line))
                    rows.lines.append(line_no)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}, line {line_no}: not JSON ({e.msg})") from None
    return rows


def _write_jsonl(path: str, rows: list[dict]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    os.replace(tmp, path)


def validate_pool(rows: list[dict], where: str = "pool", first: int = 1) -> list[dict]:
    """The pool's columns only; a clear error naming the row (1-based) and field of bad input."""
    lines = getattr(rows, "lines", None)  # read from a file: the file and its lines are named
    if not rows:
        raise ValueError(f"{getattr(rows, 'path', '') or where}: no rows")
    out = []
    for k, (i, r) in enumerate(enumerate(rows, first)):
        at = f"{where} {rows.path}, line {lines[k]}" if lines else f"{where}, row {i}"
        if not isinstance(r, dict):
            raise ValueError(f"{at}: a JSON object expected, got {type(r).__name__}")
        for c in POOL_COLUMNS:
            v = r.get(c)
            if v is None or (isinstance(v, str) and not v.strip()):
                raise ValueError(f"{at}, field '{c}': missing or empty")
        if r["chosen"] == r["rejected"]:
            raise ValueError(f"{at}, fields 'chosen'/'rejected': identical responses")
        out.append({c: r[c] for c in POOL_COLUMNS})
    return out


def _load_rows(value, what: str) -> list[dict]:
    if isinstance(value, str):
        if not os.path.isfile(value):
            raise ValueError(f"{what}: no such file {value!r}")
        return read_jsonl(value)
    return list(value)


# --------------------------------------------------------------------------- resume


def _done(out: str, r: int) -> bool:
    return os.path.isfile(os.path.join(out, f"round_{r}", "report.json"))


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _describe_judge(spec):
    """What identifies a judge across runs: a recipe value as given; a function or class by its name; an
    instance by its class and its attributes (objects among them by their type)."""
    if spec is None or isinstance(spec, (str, dict)):
        return spec
    if isinstance(spec, (types.FunctionType, types.MethodType, types.BuiltinFunctionType, type)):
        return f"{spec.__module__}:{spec.__qualname__}"
    kind = type(spec)
    state = json.dumps(getattr(spec, "__dict__", {}), sort_keys=True, default=lambda o: type(o).__qualname__)
    return {"callable": f"{kind.__module__}:{kind.__qualname__}", "state": _digest(state)}


ROUND_SETTINGS = ("training", "generation", "classifier", "lora", "samples_per_prompt", "prompts_per_round")


def _check_same_run(out: str, cfg: IterateConfig, data: dict | None = None) -> None:
    """Refuses an ``output_dir`` that holds a run with other settings or data (anything but ``rounds``)."""
    path = os.path.join(out, "iterate_config.json")
    # as JSON holds it (tuples become lists), so the same settings compare equal when a run resumes
    now = json.loads(json.dumps({k: v for k, v in asdict(cfg).items() if k != "rounds"}))
    if data is not None:
        now["data"] = json.loads(json.dumps(data))
    # a run that failed before training a round binds its data, model and judges, not how rounds train: a
    # corrected recipe continues in the same folder
    trained = any(_done(out, r) for r in range(1, 1 + max(cfg.rounds, len(os.listdir(out)))))
    if os.path.isfile(path):
        with open(path) as f:
            before = json.load(f)
        if not trained:
            before.update({k: now[k] for k in ROUND_SETTINGS if k in now})
        if "data" in now and "data" in before:
            keys = set(now["data"]) | set(before["data"])
            changed = sorted(f"data.{k}" for k in keys if now["data"].get(k) != before["data"].get(k))
        else:
            changed = []
        changed += sorted(k for k in set(now) | set(before) if k != "data" and now.get(k) != before.get(k))
        if changed:
            raise ValueError(f"{out} holds a run with other settings ({changed}); use a new output_dir")
        if trained:
            return
    with open(path, "w") as f:
        json.dump(now, f, indent=1)


# --------------------------------------------------------------------------- stages


def _train_round(cfg: IterateConfig, policy: str, reference: str | None, rows: list[dict], rdir: str, r: int):
    """Step (5): one round of DoRATrainer from ``policy``; saves the new policy to ``rdir/policy``."""
    kwargs = dict(
        output_dir=os.path.join(rdir, "trainer"),
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        logging_steps=5,
    )
    kwargs.update(cfg.training)
    kwargs["seed"] = cfg.seed + r
    peft_config = None
    if cfg.lora:
        lora = dict(cfg.lora)
        peft_config = LoraConfig(
            r=lora.pop("r", 8), lora_alpha=lora.pop("alpha", 16), lora_dropout=lora.pop("dropout", 0.0),
            target_modules=lora.pop("target_modules", None), task_type="CAUSAL_LM", **lora,
        )  # fmt: skip
    torch.manual_seed(cfg.seed + r)  # the adapter's initialisation
    trainer = DoRATrainer(
        model=policy,
        ref_model=reference,
        args=DoRAConfig(**kwargs),
        train_dataset=Dataset.from_list(rows),
        peft_config=peft_config,
    )
    trainer.train()
    model = trainer.accelerator.unwrap_model(trainer.model)
    if cfg.lora:
        model = model.merge_and_unload()
    policy_dir = os.path.join(rdir, "policy")
    if trainer.accelerator.is_main_process:
        model.save_pretrained(policy_dir)
        trainer.processing_class.save_pretrained(policy_dir)
        shutil.rmtree(kwargs["output_dir"], ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    logs = [h for h in trainer.state.log_history if "dora/ess" in h]
    stats = {
        "steps": trainer.state.global_step,
        "ess": sum(h["dora/ess"] for h in logs) / len(logs) if logs else None,
        "batch_size": trainer.args.per_device_train_batch_size * trainer.args.world_size,
        "objective_weight_max": max((h.get("dora/objective_weight_max", 0.0) for h in logs), default=None),
        "loss": trainer.state.log_history[-1].get("train_loss"),
    }
    del trainer, model
    gc.collect()
    return policy_dir, stats


def _evaluate(cfg, policy: str, round0: str, eval_rows, eval_judge, eval_fn, r: int) -> dict:
    """Human-split preference accuracy (implicit reward against the round-0 policy), win rate against the
    round-0 policy's greedy answers by ``eval_judge``, and ``eval_fn(policy_dir)``'s own numbers."""
    out: dict = {}
    tokenizer = AutoTokenizer.from_pretrained(policy)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if eval_rows:
        if r == 0:  # the policy is its own reference: every implicit reward is 0
            out["preference_accuracy"] = None
        else:
            res = implicit_reward_accuracy(
                policy, round0, tokenizer, Dataset.from_list(eval_rows), beta=cfg.eval_beta,
                target_sources=cfg.target_sources, bootstrap=200, seed=cfg.seed,
            )  # fmt: skip
            out["preference_accuracy"] = res["accuracy"]
            out["preference_accuracy_ci95"] = res["accuracy_ci95"]
            out["reward_margin"] = res["margin"]
        if eval_judge is not None:
            out.update(_win_rate(cfg, policy, round0, tokenizer, eval_rows, eval_judge))
    if eval_fn is not None:
        out.update(eval_fn(policy))
    return out


def _win_rate(cfg, policy, round0, tokenizer, eval_rows, judge) -> dict:
    prompts = list(dict.fromkeys(r["prompt"] for r in eval_rows if r.get("source") in cfg.target_sources))
    gen = {k: v for k, v in cfg.generation.items() if k in ("max_new_tokens", "batch_size")}
    answers = [sample_responses(load_causal_lm(p), tokenizer, prompts, 1, greedy=True, **gen) for p in (policy, round0)]
    ours = [s[0] for s in judge(prompts, answers[0])]
    theirs = [s[0] for s in judge(prompts, answers[1])]
    res = win_rate_from_scores(ours, theirs, bootstrap=200, seed=cfg.seed)
    return {"win_rate": res["win_rate"], "win_rate_ci95": res["win_rate_ci95"]}


# --------------------------------------------------------------------------- the loop


@dataclass
class _Run:
    """What every round reads: the settings, the prompts, the loaded judges, the evaluation rows, the trusted
    sample, and this process's place among the processes (accelerate's ``PartialState``)."""

    cfg: IterateConfig
    state: object
    prompts: list
    judge: object
    eval_rows: list | None
    eval_judge: object
    eval_fn: object
    weights_fn: object
    trusted: list | None


def iterate(
    config: IterateConfig,
    *,
    pool,
    judge,
    prompts: list | None = None,
    eval_data=None,
    eval_judge=None,
    eval_fn=None,
    weights_fn=None,
    trusted=None,
) -> list[dict]:
    """Run (or resume) ``config.rounds`` rounds; returns the per-round reports, round 0 first.

    ``pool``: the initial preference rows (a list or a jsonl path) with ``prompt``, ``chosen``, ``rejected``,
    ``source``. ``judge``: see ``dora.iterate.judge``. ``prompts``: what the policy answers each round
    (default: the pool's distinct prompts). ``eval_data``: held-out pairs (the human split) for the
    per-round preference accuracy and, with ``eval_judge``, the win rate against round 0. ``eval_fn(policy_dir)
    -> dict`` adds numbers of your own. ``weights_fn`` replaces step (4) (see ``dora.iterate.weights``);
    ``trusted`` (rows or a jsonl path) is the separate trusted sample of ``weights="density"``.
    """
    initial = validate_pool(_load_rows(pool, "pool"), "pool")
    run = _prepare(config, initial, judge, prompts, eval_data, eval_judge, eval_fn, weights_fn, trusted)
    reports = [_round_zero(run, initial)]
    # resume: the rounds whose report exists are done; the run goes on from the first one that is not
    first = next((r for r in range(1, config.rounds + 1) if not _done(config.output_dir, r)), config.rounds + 1)
    reports += [_read_json(os.path.join(config.output_dir, f"round_{r}", "report.json")) for r in range(1, first)]
    policy = reports[-1]["policy"] if first > 1 else config.model
    for r in range(first, config.rounds + 1):
        reports.append(_run_round(run, r, policy))
        policy = reports[-1]["policy"]
    if run.state.is_main_process:
        write_run_report(reports, config.output_dir)
    return reports


def _run_round(run: _Run, r: int, policy: str) -> dict:
    """One round, (1) to (5), from ``policy``; its report (written last: a round without one is not done)."""
    rdir = os.path.join(run.cfg.output_dir, f"round_{r}")
    pool_rows = _read_pool(run.cfg.output_dir, r - 1)
    if run.state.is_main_process:
        os.makedirs(rdir, exist_ok=True)
    run.state.wait_for_everyone()
    logger.info("round %d: sampling from %s", r, policy)
    clock = {"start": time.perf_counter()}
    prompts, samples = _sample(run, policy, r)
    clock["sample"] = time.perf_counter()
    new_rows, counts = _judge(run, prompts, samples, r)
    pool_rows = _grow_pool(pool_rows, new_rows)
    clock["judge"] = time.perf_counter()
    weighted, weight_report = _weigh(run, pool_rows, rdir, r)
    clock["weights"] = time.perf_counter()
    # fixed: the round-0 policy; previous: None, i.e. a frozen copy of the starting policy (with LoRA, the base
    # with the fresh adapter disabled, which is that same policy)
    reference = run.cfg.model if run.cfg.reference == "fixed" else None
    new_policy, train_stats = _train_round(run.cfg, policy, reference, weighted, rdir, r)
    clock["train"] = time.perf_counter()
    if run.state.is_main_process:
        _write_round_report(run, r, rdir, new_policy, weighted, counts, weight_report, train_stats, clock)
    run.state.wait_for_everyone()
    return _read_json(os.path.join(rdir, "report.json"))


def _prepare(cfg, initial, judge, prompts, eval_data, eval_judge, eval_fn, weights_fn, trusted) -> _Run:
    """Every input checked (the pool, the targets, the evaluation rows, the trusted sample, the prompts, the model
    folder) before the judges load; then the output folder bound to this run's settings and data."""
    if cfg.weights == "classifier" and weights_fn is None:
        sources = sorted({r["source"] for r in initial})
        if not set(cfg.target_sources) & set(sources):
            raise ValueError(f"target_sources {cfg.target_sources}: none is a source of the pool, which has {sources}")
    eval_rows = _load_rows(eval_data, "eval_data") if eval_data is not None else None
    if eval_rows is not None:
        eval_rows = validate_pool(eval_rows, "eval_data")
    if trusted is not None:
        trusted = validate_pool(
            [dict(r, source=r.get("source") or "trusted") for r in _load_rows(trusted, "trusted")], "trusted"
        )
    prompts = _read_prompts(prompts, initial)
    data = {
        "pool": _digest(initial), "prompts": _digest(prompts), "trusted": _digest(trusted),
        "eval_data": _digest(eval_rows), "judge": _describe_judge(judge), "eval_judge": _describe_judge(eval_judge),
    }  # fmt: skip
    check_local_path(cfg.model, "model")  # a mistyped folder is named before the judge and the policy load
    judge = load_judge(judge)  # a reward model loads here, after the data is checked
    eval_judge = load_judge(eval_judge) if eval_judge is not None else None
    state = process_state()
    os.makedirs(cfg.output_dir, exist_ok=True)
    if state.is_main_process:
        _check_same_run(cfg.output_dir, cfg, data)
    state.wait_for_everyone()
    return _Run(cfg, state, prompts, judge, eval_rows, eval_judge, eval_fn, weights_fn, trusted)


def _read_prompts(prompts, initial: list[dict]) -> list:
    """The prompts to answer: given, read from a jsonl file (a ``prompt`` per line), or the pool's distinct ones."""
    if prompts is None:
        prompts = list(dict.fromkeys(r["prompt"] for r in initial))
    elif isinstance(prompts, str):
        path, prompts = prompts, read_jsonl(prompts)
        missing = [n for n, r in zip(prompts.lines, prompts) if not isinstance(r, dict) or not r.get("prompt")]
        if missing:
            raise ValueError(f"{path}, line {missing[0]}, field 'prompt': missing or empty")
        prompts = [r["prompt"] for r in prompts]
    if not prompts:
        raise ValueError("prompts: none to sample from")
    return prompts


def _round_zero(run: _Run, initial: list[dict]) -> dict:
    """Round 0: the initial pool and the starting policy's evaluation, written once."""
    out = run.cfg.output_dir
    if not _done(out, 0):
        r0 = os.path.join(out, "round_0")
        if run.state.is_main_process:
            os.makedirs(r0, exist_ok=True)
            _write_jsonl(os.path.join(r0, "pool.jsonl"), initial)
            ev = _evaluate(run.cfg, run.cfg.model, run.cfg.model, run.eval_rows, run.eval_judge, run.eval_fn, 0)
            report = {"round": 0, "policy": run.cfg.model, "pool": dict(Counter(r["source"] for r in initial)),
                      "eval": ev}  # fmt: skip
            _write_json(os.path.join(r0, "report.json"), report)
        run.state.wait_for_everyone()
    return _read_json(os.path.join(out, "round_0", "report.json"))


def _read_pool(out: str, r: int) -> list[dict]:
    return [{c: x[c] for c in POOL_COLUMNS} for x in read_jsonl(os.path.join(out, f"round_{r}", "pool.jsonl"))]


def _sample(run: _Run, policy: str, r: int) -> tuple[list, list]:
    """Step (1): the round's prompts (a seeded subset with ``prompts_per_round``) and k responses to each."""
    cfg = run.cfg
    prompts = run.prompts
    if cfg.prompts_per_round and cfg.prompts_per_round < len(prompts):
        prompts = random.Random(cfg.seed * 1000 + r).sample(prompts, cfg.prompts_per_round)
    tokenizer = AutoTokenizer.from_pretrained(policy)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    gen = dict(cfg.generation)
    if gen.get("backend", "hf") == "vllm":
        model = policy  # vLLM loads it itself
    else:
        model = AutoModelForCausalLM.from_pretrained(policy).to(run.state.device)
    samples = sample_responses_distributed(
        model, tokenizer, prompts, cfg.samples_per_prompt, seed=cfg.seed * 1000 + r, **gen
    )
    return prompts, samples


def _judge(run: _Run, prompts: list, samples: list, r: int) -> tuple[list[dict], dict]:
    """Step (2): each prompt's responses judged once, by one process, and paired best against worst."""
    scores = judge_distributed(run.judge, prompts, samples)
    return make_pairs(prompts, samples, scores, f"policy_r{r}")


def _grow_pool(pool_rows: list[dict], new_rows: list[dict]) -> list[dict]:
    """Step (3): the new pairs join the pool (as source ``policy_r<r>``); nothing leaves it."""
    return pool_rows + new_rows


def _weigh(run: _Run, pool_rows: list[dict], rdir: str, r: int) -> tuple[list[dict], dict]:
    """Step (4): the weights refitted on the grown pool. Fitted once, on the main process, and sent to the others:
    a transformer or embedding classifier need not be bit-identical across processes, and every process must
    train on one set."""
    fitted = [None]
    if run.state.is_main_process:
        fitted = [fit_weights(
            pool_rows, run.weights_fn or run.cfg.weights, target_sources=run.cfg.target_sources,
            classifier=run.cfg.classifier, seed=run.cfg.seed + r, output_dir=os.path.join(rdir, "weights"),
            trusted=run.trusted,
        )]  # fmt: skip
    if run.state.num_processes > 1:
        fitted = broadcast_object_list(fitted, from_process=0)
    return fitted[0]


def _write_round_report(run, r, rdir, policy, weighted, counts, weight_report, train_stats, clock) -> None:
    """The round's evaluation, its pool with this round's weights, and its report, written last."""
    ev = _evaluate(run.cfg, policy, run.cfg.model, run.eval_rows, run.eval_judge, run.eval_fn, r)
    clock["eval"] = time.perf_counter()
    names = list(clock)
    report = round_summary(r, policy, weighted, counts, weight_report, train_stats, ev, run.cfg.target_sources)
    report["seconds"] = {b: round(clock[b] - clock[a], 2) for a, b in zip(names, names[1:])}
    _write_jsonl(os.path.join(rdir, "pool.jsonl"), weighted)
    _write_json(os.path.join(rdir, "report.json"), report)
    logger.info("round %d: %s", r, report["eval"])


def _write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def _read_json(path: str):
    with open(path) as f:
        return json.load(f)
