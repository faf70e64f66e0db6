"""`dora eval preference | distalign`: each writes a Markdown table to stdout and, with ``--output DIR``,
``DIR/results.json`` and ``DIR/results.md`` (distalign also ``DIR/predictions.jsonl``)."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os

from dora.local_model import check_model_folder, local_num_labels
from dora.output_dir import claim_output_dir


def _csv(text: str | None) -> list[str]:
    return [s.strip() for s in (text or "").split(",") if s.strip()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="eval_command", required=True, metavar="{preference,distalign}")
    _add_preference_arguments(sub)
    _add_distalign_arguments(sub)


def _add_preference_arguments(sub) -> None:
    pref = sub.add_parser(
        "preference",
        help="implicit-reward accuracy, reward-model accuracy, win rate",
        description="Preference evaluation of a trained policy on a held-out split.",
    )
    pref.add_argument("--model", required=True, help="the trained policy (folder, Hub id or LoRA adapter folder)")
    pref.add_argument(
        "--ref-model",
        default=None,
        help="its reference policy (default: the base model of a LoRA adapter folder)",
    )
    pref.add_argument("--dataset", required=True, help="held-out pairwise rows: file, saved dataset or Hub id")
    pref.add_argument("--split", default="test", help="split of a saved dataset or Hub dataset")
    pref.add_argument("--source-column", default="source", help="column naming each row's source")
    pref.add_argument(
        "--target-sources",
        default="human",
        help="comma-separated sources of the overall numbers; 'all': every row",
    )
    pref.add_argument("--reward-model", default=None, help="an AutoModelForSequenceClassification folder or id")
    pref.add_argument("--beta", type=float, default=0.1, help="beta of the implicit reward")
    pref.add_argument(
        "--reference-free",
        action="store_true",
        help="SimPO's implicit reward beta * logp / |y| (no reference)",
    )
    pref.add_argument("--no-implicit", action="store_true", help="skip the implicit-reward accuracy")
    pref.add_argument("--max-length", type=int, default=1024, help="tokens of prompt + response")
    pref.add_argument("--batch-size", type=int, default=16, help="rows per forward pass")
    pref.add_argument("--win-rate", action="store_true", help="generate with both policies, judge with --reward-model")
    pref.add_argument("--max-prompts", type=int, default=None, help="the first N distinct target prompts")
    pref.add_argument("--max-new-tokens", type=int, default=128, help="win rate: tokens generated per response")
    pref.add_argument("--temperature", type=float, default=0.7, help="win rate: sampling temperature")
    pref.add_argument("--top-p", type=float, default=0.9, help="win rate: nucleus sampling mass")
    pref.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    pref.add_argument("--tie-margin", type=float, default=0.0, help="score differences up to this are ties")
    pref.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the 95%% intervals")
    pref.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and of the sampling")
    pref.add_argument(
        "--skip-invalid-rows", action="store_true", help="drop invalid rows (counted in a warning) instead of stopping"
    )
    pref.add_argument("--output", default=None, help="folder for results.json and results.md")
    pref.add_argument(
        "--overwrite-output-dir", action="store_true", help="replace the results of an earlier run in --output"
    )


def _add_distalign_arguments(sub) -> None:
    dist = sub.add_parser(
        "distalign",
        help="the distributional-alignment benchmark (Meister et al., arXiv 2411.05403)",
        description="Can the model match the answer distribution of a demographic group? Runs a local model "
        "(--model) or scores distributions produced elsewhere (--predictions).",
    )
    src = dist.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="a local causal LM (folder, Hub id or LoRA adapter folder)")
    src.add_argument("--predictions", help="a JSONL file of distributions to score (no model runs)")
    dist.add_argument(
        "--data", nargs="+", required=True, help="benchmark files (<ATTRIBUTE>_data.json, data.json, *.jsonl)"
    )
    dist.add_argument(
        "--format", default="auto", choices=["auto", "opinionqa", "nytimes", "globalvalues", "jsonl"],
        help="the files' layout (auto: from the file names)",
    )  # fmt: skip
    dist.add_argument("--groups", default="paper", help="'paper' (the paper's groups), 'all', or comma-separated names")
    dist.add_argument("--info", nargs="*", default=[], help="extra OpinionQA info.csv files (option order, ordinals)")
    dist.add_argument(
        "--shot-pool", nargs="*", default=[], help="extra benchmark files whose questions may be few-shot examples"
    )
    dist.add_argument("--methods", default="logprobs,sequence,verbalize", help="comma-separated expression methods")
    dist.add_argument("--steering", default="none,persona,few_shot", help="comma-separated steering methods")
    dist.add_argument("--max-questions", type=int, default=None, help="the first N questions of each file")
    dist.add_argument("--samples", type=int, default=30, help="N letters of the sequence method and the floor")
    dist.add_argument("--shots", type=int, default=5, help="k example questions of few-shot steering")
    dist.add_argument(
        "--prompt-style", default="reference", choices=["reference", "concise"], help="the benchmark's prompts or ours"
    )
    dist.add_argument(
        "--verbalize-decoding", default="sample", choices=["sample", "greedy"], help="decoding of the verbalize method"
    )
    dist.add_argument(
        "--failed-parse", default="zero", choices=["zero", "uniform", "skip"], help="how an unreadable output is scored"
    )
    dist.add_argument(
        "--no-renormalize", action="store_true", help="TVD against predictions as given (mass off the options counts)"
    )
    dist.add_argument("--chat-template", action="store_true", help="wrap each prompt as a chat user message")
    dist.add_argument("--batch-size", type=int, default=16, help="prompts per forward pass")
    dist.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the 95%% interval")
    dist.add_argument("--seed", type=int, default=0, help="seed of the sampling, the shots and the bootstrap")
    dist.add_argument(
        "--allow-partial", action="store_true",
        help="--predictions: score the questions they cover even when some loaded questions have none",
    )  # fmt: skip
    dist.add_argument(
        "--output", default=None, help="folder for leaderboard.json, results.json, results.md, predictions.jsonl"
    )
    dist.add_argument(
        "--overwrite-output-dir", action="store_true", help="replace the results of an earlier run in --output"
    )


def _write(output: str | None, result: dict, table: str, rows: list[dict] | None = None) -> None:
    print(table)
    if not output:
        return
    os.makedirs(output, exist_ok=True)
    with open(os.path.join(output, "results.json"), "w") as f:
        json.dump(result, f, indent=1, default=float)
    with open(os.path.join(output, "results.md"), "w") as f:
        f.write(table + "\n")
    if rows is not None:
        with open(os.path.join(output, "predictions.jsonl"), "w") as f:
            for r in rows:
                f.write(json.dumps(r, default=float) + "\n")
    print(f"wrote {output}/results.json and results.md")


def _num(x, digits: int = 3) -> str:
    """``digits`` decimals; a non-zero value too small for them in scientific notation (a margin of 4e-5 is
    not printed as 0.0000)."""
    if x is None or not math.isfinite(x):
        return str(x)
    return f"{x:.{digits - 1}e}" if x != 0 and round(abs(x), digits) == 0 else f"{x:.{digits}f}"


def _interval(ci, digits: int = 3) -> str:
    """A 95% interval printed at the precision of its estimate."""
    return f"[{_num(ci[0], digits)}, {_num(ci[1], digits)}]"


def _sources(targets) -> str:
    return targets if isinstance(targets, str) else ", ".join(targets)


def _preference_table(result: dict) -> str:
    lines = ["| metric | rows | value | 95% CI |", "|---|---|---|---|"]
    for key, name in (("implicit_reward", "implicit-reward"), ("reward_model", "reward-model")):
        r = result.get(key)
        if r is None:
            continue
        lines.append(f"| {name} accuracy ({_sources(r['target_sources'])}) | {r['n']} | {r['accuracy']:.3f} "
                     f"| {_interval(r['accuracy_ci95'])} |")  # fmt: skip
        lines.append(f"| {name} margin | {r['n']} | {_num(r['margin'], 4)} | {_interval(r['margin_ci95'], 4)} |")
        for s, v in r["by_source"].items():
            lines.append(f"| {name} accuracy, source {s or '(none)'} | {v['n']} | {v['accuracy']:.3f} "
                         f"| {_interval(v['accuracy_ci95'])} |")  # fmt: skip
    w = result.get("win_rate")
    if w is not None:
        for k in ("win", "tie", "lose", "win_rate"):
            label = "win rate (tie = ½)" if k == "win_rate" else f"{k} vs reference"
            lines.append(f"| {label} | {w['n']} | {w[k]:.3f} | {_interval(w[f'{k}_ci95'])} |")
    return "\n".join(lines)


def _at_least(args, low: dict) -> None:
    """Flags out of range, one line each, before any model loads: ``low`` maps a flag to (minimum, strict);
    NaN and infinity are refused (a NaN beta scored every pair wrong)."""
    for name, (bound, strict) in low.items():
        value = getattr(args, name)
        if value is None:
            continue
        if not math.isfinite(value):
            raise ValueError(f"--{name.replace('_', '-')} must be a finite number, got {value}")
        if (value <= bound) if strict else (value < bound):
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} must be {'>' if strict else '>='} {bound}, got {value}")


def _check_models(*paths) -> None:
    """A model folder that is not there is named before anything loads (a local-looking path is not looked up
    on the Hub)."""
    from dora.data import check_local_path

    for what, path in paths:
        if path:
            check_local_path(path, what)


@contextlib.contextmanager
def _loading(what: str, path: str):
    """A model that cannot be loaded (no such folder, and not on the Hub or offline): one line naming it."""
    try:
        yield
    except OSError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{what} {path!r}: not a local folder and not loadable from the Hub ({first})") from e


def run_preference(args) -> int:
    """Everything the command reads is checked first (flags, model folders, rows, the output folder), then the
    models load and the numbers are computed."""
    from dora.eval import preference as P

    P.check_settings(flags=True, **{k: getattr(args, k) for k in P.SETTINGS})
    _at_least(args, {"bootstrap": (1, False), "max_prompts": (1, False), "seed": (0, False)})
    if args.reference_free and args.ref_model and not args.win_rate:
        raise ValueError("--reference-free uses no reference model: drop --ref-model (only --win-rate uses it then)")
    check_model_folder(args.model, "model")
    check_model_folder(args.ref_model, "ref_model", tokenizer=False)
    check_model_folder(args.reward_model, "reward_model")
    if args.reward_model and local_num_labels(args.reward_model) not in (None, 1, 2):
        raise ValueError(f"reward_model {args.reward_model!r}: a reward model has 1 or 2 labels, this one has "
                         f"{local_num_labels(args.reward_model)}")  # fmt: skip
    targets = None if args.target_sources.strip().lower() == "all" else _csv(args.target_sources)
    if targets == []:
        raise ValueError("--target-sources: give one or more source names, or 'all'")
    ref_path = args.ref_model or P.default_reference(args.model)
    if args.win_rate and (args.reward_model is None or ref_path is None):
        raise ValueError("--win-rate needs --reward-model and --ref-model")
    implicit = not args.no_implicit and (ref_path is not None or args.reference_free)
    if not implicit and args.reward_model is None:
        raise ValueError("nothing to evaluate: give --ref-model (or --reference-free) and/or --reward-model")
    data = _preference_rows(args, targets)
    outputs = dict(writes=("results.json", "results.md"), inputs=(args.dataset,), refuse_non_empty=False,
                   models=(args.model, args.ref_model, ref_path, args.reward_model),
                   overwrite=args.overwrite_output_dir)  # fmt: skip
    with claim_output_dir(args.output, **outputs):
        return _run_preference(args, data, targets, ref_path, implicit)


def _preference_rows(args, targets):
    """The held-out rows, checked before any model loads: pairwise, valid, and holding the target sources."""
    from dora.data import add_implicit_prompt, is_listwise, load_rows, validate_rows
    from dora.eval import preference as P

    data = add_implicit_prompt(load_rows(args.dataset, args.split))
    if is_listwise(data.column_names):
        raise ValueError(f"{args.dataset}: preference evaluation needs pairwise rows (prompt, chosen, rejected)")
    path = args.dataset if os.path.isfile(os.path.expanduser(args.dataset)) else None
    data = validate_rows(data, name="eval", path=path, skip_invalid=args.skip_invalid_rows)
    if args.source_column in data.column_names:
        P._check_targets([str(s) for s in data[args.source_column]], targets, args.source_column)
    elif args.source_column != "source":
        raise ValueError(f"--source-column {args.source_column!r}: {args.dataset} has no such column "
                         f"(columns: {data.column_names})")  # fmt: skip
    return data


def _check_prompt_lengths(args, data, tokenizer) -> None:
    """Before the models load: when no row's prompt fits in --max-length - 1 tokens nothing could be scored
    (rows that do not fit are dropped and counted in a warning, as in training)."""
    from dora.data import tokenize_row

    longest = 0
    for prompt in data["prompt"]:
        reply = [{"role": "assistant", "content": "x"}] if isinstance(prompt, list) else "x"
        n = len(tokenize_row(tokenizer, prompt, [reply])[0])
        if n <= args.max_length - 1:
            return
        longest = max(longest, n)
    raise ValueError(f"{args.dataset}: every prompt is longer than --max-length {args.max_length} - 1 tokens (the "
                     f"longest {longest}): raise --max-length")  # fmt: skip


def _run_preference(args, data, targets, ref_path, implicit) -> int:
    from transformers import AutoTokenizer

    from dora.eval import preference as P

    with _loading("model", args.model):
        tok = AutoTokenizer.from_pretrained(args.model)
    if implicit:
        _check_prompt_lengths(args, data, tok)
    with _loading("model", args.model):
        policy = P.load_causal_lm(args.model) if implicit or args.win_rate else None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    with _loading("ref_model", ref_path or ""):
        reference = P.load_causal_lm(ref_path) if ref_path and (args.win_rate or not args.reference_free) else None
    boot = dict(bootstrap=args.bootstrap, seed=args.seed)
    used_ref = None if args.reference_free and not args.win_rate else ref_path
    result: dict = {"model": args.model, "ref_model": used_ref, "dataset": args.dataset, "n_rows": len(data)}
    if implicit:
        result["implicit_reward"] = P.implicit_reward_accuracy(
            policy,
            None if args.reference_free else reference,
            tok,
            data,
            beta=args.beta,
            target_sources=targets,
            source_column=args.source_column,
            batch_size=args.batch_size,
            max_length=args.max_length,
            **boot,
        )
    with _loading("reward_model", args.reward_model or ""):
        rm = P.RewardModel(args.reward_model, args.batch_size, args.max_length) if args.reward_model else None
    if rm is not None:
        result["reward_model"] = P.reward_model_accuracy(
            rm, data, target_sources=targets, source_column=args.source_column, **boot
        )
    if args.win_rate:
        rows = data
        if targets and args.source_column in data.column_names:
            rows = data.filter(lambda r: str(r[args.source_column]) in set(targets))
        prompts, seen = [], set()
        for p in rows["prompt"]:
            key = json.dumps(p, sort_keys=True)
            if key not in seen:
                seen.add(key)
                prompts.append(p)
        prompts = prompts[: args.max_prompts]
        result["win_rate"] = P.win_rate(
            policy,
            reference,
            tok,
            rm,
            prompts,
            tie_margin=args.tie_margin,
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            do_sample=not args.greedy,
            temperature=args.temperature,
            top_p=args.top_p,
            **boot,
        )
    _write(args.output, result, _preference_table(result))
    return 0


def run_distalign(args) -> int:
    """Flags, files, items, predictions and the output folder are checked first; then the model runs (its prompts
    checked against its context before the first forward pass) or the predictions are scored."""
    from dora.eval import distalign as D

    _at_least(args, {"samples": (1, False), "shots": (0, False), "max_questions": (1, False), "batch_size": (1, False),
                     "bootstrap": (1, False), "seed": (0, False)})  # fmt: skip
    inputs = [*args.data, *args.info, *args.shot_pool, *([args.predictions] if args.predictions else [])]
    for path in inputs:
        if not os.path.isfile(os.path.expanduser(path)):
            kind = "a folder, not a benchmark file" if os.path.isdir(os.path.expanduser(path)) else "no such file"
            raise FileNotFoundError(f"{path}: {kind}")
    check_model_folder(args.model, "model")
    if args.allow_partial and not args.predictions:
        raise ValueError("--allow-partial is for --predictions (a model run predicts every question)")
    methods = [D.canonical("method", m) for m in _csv(args.methods)]
    steerings = [D.canonical("steering", s) for s in _csv(args.steering)]
    groups = args.groups if args.groups in ("paper", "all") else _csv(args.groups)
    load = dict(max_questions=args.max_questions, info_files=args.info)
    items = D.select_groups([it for p in args.data for it in D.load_benchmark(p, args.format, **load)], groups)
    if not items:
        raise ValueError(f"no items left after the group filter {args.groups!r}")
    preds = _read_predictions(args, D, items, methods, steerings) if args.predictions else None
    pool = [it for p in args.shot_pool for it in D.load_benchmark(p, args.format, info_files=args.info)]
    writes = ("results.json", "results.md", "predictions.jsonl", "leaderboard.json")
    with claim_output_dir(args.output, writes=writes, inputs=tuple(inputs), models=(args.model,),
                          overwrite=args.overwrite_output_dir, refuse_non_empty=False):  # fmt: skip
        if preds is not None:
            report, rows = D.score_predictions(
                items, preds, failed=args.failed_parse, renormalize=not args.no_renormalize, samples=args.samples,
                bootstrap=args.bootstrap, seed=args.seed,
            )  # fmt: skip
            report["predictions"] = args.predictions
        else:
            with _loading("model", args.model):
                runner = D.ModelRunner(args.model, args.batch_size, chat_template=args.chat_template)
            report, rows = D.evaluate(
                runner, items, methods=methods, steerings=steerings, samples=args.samples, seed=args.seed,
                bootstrap=args.bootstrap, k_shots=args.shots, shot_pool=pool, style=args.prompt_style,
                verbalize_decoding=args.verbalize_decoding, failed=args.failed_parse,
                renormalize=not args.no_renormalize,
            )  # fmt: skip
            report["model"] = args.model
        report["data"] = args.data
        _write(args.output, report, D.markdown(report), rows)
        if args.output:
            with open(os.path.join(args.output, "leaderboard.json"), "w") as f:
                json.dump(D.leaderboard_json(report), f, indent=1)
            print(f"wrote {args.output}/leaderboard.json")
    return 0


def _read_predictions(args, D, items, methods, steerings) -> list[dict]:
    """The --predictions rows for the chosen methods and steerings, covering every loaded question unless
    --allow-partial."""
    preds = [
        p for p in D.read_predictions(args.predictions, items) if p["method"] in methods and p["steering"] in steerings
    ]
    if not preds:
        raise ValueError(f"{args.predictions}: no prediction for --methods {args.methods} "
                         f"and --steering {args.steering}")  # fmt: skip
    if not args.allow_partial:
        D.check_coverage(args.predictions, items, preds)
    return preds


def run(args) -> int:
    return run_preference(args) if args.eval_command == "preference" else run_distalign(args)
