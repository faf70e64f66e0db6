"""`dora select`'s run: check everything, carve the held-out split, train each candidate for the pilot budget
(resumable: a candidate whose ``done.json`` exists is not trained again), score it on the held-out pairs.

Steps, each a function: ``plan`` (every check, no model: the recipe through `dora train`'s loader and row checks,
the candidates' settings, the output folder), ``write_data`` (the files each candidate trains on), ``run_candidate``
(one candidate: `dora train`'s trainer, its training, the held-out scores), ``run_plan`` (all of it, then the report).
Under ``accelerate launch`` every process runs the same steps; the trainer is `dora train`'s, so is the
distribution; rank 0 writes the files.
"""

from __future__ import annotations

import copy
import gc
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np
from transformers import TrainerCallback

from dora.outputs import check_output_dir
from dora.select.candidates import parse_candidates, slug, spec
from dora.select.data import candidate_rows, carve_heldout, drop_heldout, row_key, write_jsonl
from dora.select.report import write_report
from dora.train_cli import build, load_recipe, lora_config, preflight
from dora.train_cli.recipe import UsageError

__all__ = ["Plan", "plan", "run_plan", "run_candidate", "heldout_logps", "heldout_rewards"]

MANIFEST, DONE = "select.json", "done.json"
OWN_FOLDER = {"overwrite_output_dir": True}  # a candidate's folder is select's own (its --output was checked)
PILOT_ONLY = ("eval_dataset", "eval_dataset_split", "max_steps", "output_dir")  # recipe keys the pilot sets itself


@dataclass
class Plan:
    """What a select run does, fixed before any model loads."""

    output: str
    names: list[str]
    steps: int
    seed: int
    config_kwargs: dict  # the user's DoRAConfig keys (the full run's recipe starts from them)
    extra: dict  # the user's recipe keys
    pilot_extra: dict  # the recipe keys of the pilots (LoRA unless the user chose otherwise)
    train_rows: list[dict] = field(repr=False)
    heldout_rows: list[dict] = field(repr=False)
    all_rows: list[dict] = field(repr=False)
    settings: dict = field(default_factory=dict)
    confidence: float = 0.95
    bootstrap: int = 2000
    full_steps: int | None = None
    schedule: str = "full"  # "full": the full run's learning-rate schedule, stopped after ``steps``; "pilot": its own
    notes: list[str] = field(default_factory=list)

    @property
    def horizon(self) -> int:
        """The steps the learning-rate schedule spans: the full run's (``schedule="full"``) or the pilot's."""
        return max(self.steps, self.full_steps or 0) if self.schedule == "full" else self.steps


SCHEDULES = ("full", "pilot")


def _check_flags(steps, fraction, confidence, bootstrap, targets, schedule) -> None:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise UsageError(f"--steps: a whole number of steps per candidate (at least 1) expected, got {steps!r}")
    if schedule not in SCHEDULES:
        raise UsageError(f"--schedule: one of {', '.join(SCHEDULES)} expected, got {schedule!r}")
    if not 0 < fraction < 1:
        raise UsageError(f"--heldout-fraction: a share of the target prompts in (0, 1) expected, got {fraction!r}")
    if not 0 < confidence < 1:
        raise UsageError(f"--confidence: a level in (0, 1) expected, got {confidence!r}")
    if bootstrap < 100:
        raise UsageError(f"--bootstrap: at least 100 resamples expected, got {bootstrap!r}")
    if not targets:
        raise UsageError("--target-sources: at least one source expected")


def _full_steps(kwargs: dict, n_rows: int) -> int | None:
    """Optimiser steps of the full run the recipe describes (one process), for the pilot's share of it."""
    if kwargs.get("max_steps", -1) and kwargs.get("max_steps", -1) > 0:
        return int(kwargs["max_steps"])
    batch = kwargs.get("per_device_train_batch_size", 8) * kwargs.get("gradient_accumulation_steps", 1)
    return math.ceil(float(kwargs.get("num_train_epochs", 3.0)) * math.ceil(n_rows / batch))


def _needs(names: list[str], columns: list[str], weight_column: str, source_column: str, carve: bool) -> None:
    for name in names:
        s = spec(name)
        if s.get("weights") and weight_column not in columns:
            raise UsageError(f"candidate {name!r} needs the '{weight_column}' column: run `dora classify` on the data "
                             f"first, or leave {name!r} out of --candidates")  # fmt: skip
        if (s["rows"] != "all" or carve) and source_column not in columns:
            why = f"candidate {name!r}" if s["rows"] != "all" else "carving the held-out split"
            raise UsageError(f"{why} needs the '{source_column}' column (each row's source); the data has "
                             f"{sorted(columns)}")  # fmt: skip


def plan(config: str | None, overrides: dict, *, output: str, candidates=None, steps: int = 50,
         heldout: str | None = None, heldout_fraction: float = 0.2, target_sources=("human",),
         confidence: float = 0.95, bootstrap: int = 2000, skip_invalid_rows: bool = False,
         overwrite: bool = False, keep_heldout_duplicates: bool = False, schedule: str = "full") -> Plan:  # fmt: skip
    """Every check before any model loads; a mistake is a one-line ValueError."""
    targets = [str(t) for t in target_sources]
    _check_flags(steps, heldout_fraction, confidence, bootstrap, targets, schedule)
    names = parse_candidates(candidates)
    config_kwargs, extra = load_recipe(config, dict(overrides))
    user = (copy.deepcopy(config_kwargs), copy.deepcopy(extra))
    kwargs = {k: v for k, v in config_kwargs.items() if k not in PILOT_ONLY}
    pilot_extra = {k: v for k, v in extra.items() if k not in PILOT_ONLY}
    if extra.get("use_peft") is not False and lora_config(extra) is None:
        pilot_extra["use_peft"] = True  # pilots are LoRA unless the recipe says otherwise
    if heldout:
        pilot_extra.update(eval_dataset=heldout, eval_dataset_split="train")
    first = os.path.join(output, "candidates", slug(names[0]))
    args, train, evald = _preflight({**kwargs, "output_dir": first}, {**pilot_extra, **OWN_FOLDER}, skip_invalid_rows)
    for name in names:  # each candidate's settings, checked now rather than after the others have trained
        try:
            type(args)(**{**kwargs, **spec(name)["keys"], "output_dir": output, "max_steps": steps})
        except (TypeError, ValueError) as e:
            raise UsageError(f"candidate {name!r}: {e}") from e
    _needs(names, train.column_names, args.weight_column, args.source_column, carve=not heldout)
    rows = train.to_list()
    notes = []
    if heldout:
        held = evald.to_list()
        kept, removed = drop_heldout(rows, held)
        train_rows = rows if keep_heldout_duplicates else kept
        if removed:
            notes.append(f"{removed} training row(s) equal to held-out rows were " + (
                "kept (--keep-heldout-duplicates)" if keep_heldout_duplicates else "left out of the pilots' training"))
    else:
        train_rows, held = carve_heldout(rows, fraction=heldout_fraction, seed=args.seed,
                                         source_column=args.source_column, targets=targets)  # fmt: skip
    if any(spec(n)["rows"] != "all" for n in names) and not any(str(r.get(args.source_column)) in targets
                                                               for r in train_rows):  # fmt: skip
        raise UsageError(f"no training row has {args.source_column} in {targets}: the target-row candidates have "
                         f"nothing to train on (see --target-sources)")  # fmt: skip
    full_steps = _full_steps(config_kwargs, len(rows))
    warmup = args.get_warmup_steps(full_steps) if schedule == "full" and full_steps else 0
    if warmup > steps:
        notes.append(f"the pilots' {steps} steps end inside the full run's warmup ({warmup} of its {full_steps} "
                     f"steps), below its peak learning rate: give more --steps, or --schedule pilot")  # fmt: skip
    settings = {
        "candidates": {n: spec(n) for n in names}, "steps": steps, "schedule": schedule, "seed": args.seed,
        "targets": targets,
        "heldout": heldout, "heldout_fraction": None if heldout else heldout_fraction,
        "keep_heldout_duplicates": bool(keep_heldout_duplicates),
        "recipe": {k: v for k, v in {**kwargs, **pilot_extra}.items()},
        "data": hashlib.sha256("\n".join(map(row_key, rows + held)).encode()).hexdigest(),
    }  # fmt: skip
    settings = json.loads(json.dumps(settings, default=str))
    _check_output(output, settings, [config, extra["dataset"], heldout], [extra["model_name_or_path"]], overwrite)
    return Plan(output=output, names=names, steps=steps, seed=args.seed, config_kwargs=user[0], extra=user[1],
                pilot_extra=pilot_extra, train_rows=train_rows, heldout_rows=held, all_rows=rows, settings=settings,
                confidence=confidence, bootstrap=bootstrap, full_steps=full_steps, schedule=schedule,
                notes=notes)  # fmt: skip


def _preflight(kwargs: dict, extra: dict, skip_invalid: bool = False):
    """(DoRAConfig, train rows, eval rows) from `dora train`'s preflight."""
    plan = preflight(kwargs, extra, skip_invalid)
    return plan["args"], plan["train"], plan["eval"]


def _build(kwargs: dict, extra: dict):
    """`dora train`'s trainer for a recipe (build returns the trainer and its plan)."""
    trainer, _ = build(kwargs, extra)
    return trainer


def _check_output(output: str, settings: dict, inputs: list, models: list, overwrite: bool) -> None:
    """A new folder, or the folder of the same select run (resumed), or a non-empty folder with ``--overwrite-output``;
    a select run with other settings is refused."""
    manifest = os.path.join(output, MANIFEST)
    earlier = None
    if os.path.isfile(manifest):
        with open(manifest) as f:
            earlier = json.load(f)
        earlier.setdefault("schedule", "pilot")  # written before --schedule existed: each pilot had its own
        changed = [k for k in settings if earlier.get(k) != settings[k]]
        if changed:
            raise UsageError(f"--output {output!r} holds a dora select run with other settings ({', '.join(changed)} "
                             f"differ): choose a new folder, or rerun with the same settings to resume it")  # fmt: skip
    check_output_dir(output, what="--output", flag="--overwrite-output", resume=earlier is not None,
                     overwrite=overwrite, inputs=[i for i in inputs if i], models=[m for m in models if m])  # fmt: skip


def _main():
    from accelerate import PartialState

    return PartialState()


def write_data(p: Plan, state) -> dict[str, str]:
    """The pilots' training files (one per kind of rows), the held-out file and the manifest; rank 0 writes."""
    folder = os.path.join(p.output, "data")
    kinds = sorted({spec(n)["rows"] for n in p.names})
    src, targets = p.settings["recipe"].get("source_column", "source"), p.settings["targets"]
    files = {k: os.path.join(folder, f"train_{k}.jsonl") for k in kinds}
    files["heldout"] = os.path.join(folder, "heldout.jsonl")
    if state.is_main_process:
        for k in kinds:
            if not os.path.isfile(files[k]):
                write_jsonl(files[k], candidate_rows(k, p.train_rows, src, targets))
        if not os.path.isfile(files["heldout"]):
            write_jsonl(files["heldout"], p.heldout_rows)
        with open(os.path.join(p.output, MANIFEST), "w") as f:
            json.dump(p.settings, f, indent=1)
    state.wait_for_everyone()
    return files


def heldout_logps(trainer, model) -> np.ndarray:
    """Summed completion log-probs [pairs, 2] (chosen, rejected) of the held-out pairs (the trainer's eval dataset,
    tokenised as for training) under ``model``. Every process scores every pair: a sharded model needs them all."""
    from dora.eval.preference import sequence_logps

    was_training = model.training
    model.eval()
    logps, _ = sequence_logps(model, trainer.eval_dataset, trainer.processing_class.pad_token_id,
                              batch_size=trainer.args.per_device_eval_batch_size, max_length=trainer.args.max_length)
    model.train(was_training)
    return logps.double().cpu().numpy()


def heldout_rewards(trainer, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Implicit rewards β(log π − log π_ref) of the chosen and the rejected response of every held-out pair."""
    r = trainer.args.beta * (heldout_logps(trainer, trainer.model) - reference)
    return r[:, 0], r[:, 1]


class StopAfter(TrainerCallback):
    """Ends training after ``steps`` optimizer steps, whatever the schedule's length (``max_steps``)."""

    def __init__(self, steps: int):
        self.steps = steps

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.steps:
            control.should_training_stop = True
        return control


def run_candidate(p: Plan, name: str, files: dict, state) -> dict:
    """Train one candidate from the start model for ``p.steps`` steps and score it on the held-out pairs; its
    folder gets ``scores.json`` and, last, ``done.json``."""
    s = spec(name)
    folder = os.path.join(p.output, "candidates", slug(name))
    kwargs = {k: v for k, v in p.config_kwargs.items() if k not in PILOT_ONLY}
    kwargs.update(s["keys"], output_dir=folder, max_steps=p.horizon, eval_strategy="no", save_strategy="no")
    extra = {**p.pilot_extra, "dataset": files[s["rows"]], "dataset_split": "train",
             "eval_dataset": files["heldout"], "eval_dataset_split": "train"}  # fmt: skip
    extra.pop("dataset_config", None)
    t0 = time.time()
    trainer = _build(kwargs, {**extra, **OWN_FOLDER})
    trainer.add_callback(StopAfter(p.steps))  # the schedule spans p.horizon steps; the pilot trains p.steps of them
    # the reference: an explicit ref_model, else the start policy (scored before training; with LoRA, the base)
    reference = heldout_logps(trainer, trainer.ref_model if trainer.ref_model is not None and
                              extra.get("ref_model_name_or_path") else trainer.model)  # fmt: skip
    trainer.train()
    chosen, rejected = heldout_rewards(trainer, reference)
    seconds = time.time() - t0
    result = {"name": name, "steps": trainer.state.global_step, "seconds": round(seconds, 1),
              "accuracy": float(np.mean(chosen > rejected)), "margin": float(np.mean(chosen - rejected))}  # fmt: skip
    if state.is_main_process:
        with open(os.path.join(folder, "scores.json"), "w") as f:
            json.dump({"chosen": chosen.tolist(), "rejected": rejected.tolist()}, f)
        with open(os.path.join(folder, DONE), "w") as f:  # the completion marker, written last
            json.dump(result, f, indent=1)
    del trainer
    gc.collect()
    return result


def load_done(p: Plan, name: str) -> tuple[dict, np.ndarray, np.ndarray] | None:
    folder = os.path.join(p.output, "candidates", slug(name))
    if not os.path.isfile(os.path.join(folder, DONE)):
        return None
    with open(os.path.join(folder, DONE)) as f:
        result = json.load(f)
    with open(os.path.join(folder, "scores.json")) as f:
        scores = json.load(f)
    return result, np.asarray(scores["chosen"]), np.asarray(scores["rejected"])


def run_plan(p: Plan) -> dict:
    """Every candidate (finished ones read back, not trained again), then the verdict, report and recipe."""
    state = _main()
    state.wait_for_everyone()  # every process has checked the output folder before rank 0 writes into it
    files = write_data(p, state)
    if state.is_main_process:
        share = f" ({100 * p.steps / p.full_steps:.0f}% of the full run's {p.full_steps}" if p.full_steps else ""
        share += (", on its learning-rate schedule)" if p.horizon > p.steps else ")") if share else ""
        print(f"dora select: {len(p.names)} candidates, {p.steps} steps each{share}; {len(p.train_rows)} training "
              f"rows, {len(p.heldout_rows)} held-out pairs; output {p.output}", flush=True)  # fmt: skip
        for note in p.notes:
            print(f"dora select: {note}", flush=True)
    results, chosen, rejected = {}, {}, {}
    for i, name in enumerate(p.names, 1):
        done = load_done(p, name)
        if done is None:
            results[name] = run_candidate(p, name, files, state)
            state.wait_for_everyone()
            done = load_done(p, name) if state.is_main_process else (results[name], None, None)
            how = f"{results[name]['steps']} steps in {results[name]['seconds']:.0f} s"
        else:
            results[name] = done[0]
            how = "done earlier, not run again"
        if state.is_main_process:
            r = results[name]
            chosen[name], rejected[name] = done[1], done[2]
            print(f"[{i}/{len(p.names)}] {name}: held-out accuracy {100 * r['accuracy']:.1f}%, margin "
                  f"{r['margin']:.4f} ({how})", flush=True)  # fmt: skip
    if not state.is_main_process:
        state.wait_for_everyone()
        return {"results": results}
    report = write_report(p, results, chosen, rejected)
    state.wait_for_everyone()
    return report
