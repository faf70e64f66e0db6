"""`dora eval preference | distalign`."""

from __future__ import annotations

import argparse
import json
import os


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="eval_command", required=True)
    pref = sub.add_parser("preference", help="implicit-reward accuracy, reward-model accuracy, win rate")
    pref.add_argument("--model", required=True, help="the trained policy (folder or Hub id)")
    pref.add_argument(
        "--ref-model", default=None, help="its reference (needed for implicit rewards and win rate)"
    )
    pref.add_argument(
        "--dataset", required=True, help="held-out preference rows (file, saved dataset, Hub id)"
    )
    pref.add_argument("--split", default="test")
    pref.add_argument("--source-column", default="source")
    pref.add_argument("--target-sources", default=None, help="comma-separated; default: all rows")
    pref.add_argument("--reward-model", default=None, help="AutoModelForSequenceClassification folder or id")
    pref.add_argument("--beta", type=float, default=0.1, help="β of the implicit reward")
    pref.add_argument("--batch-size", type=int, default=16)
    pref.add_argument("--win-rate", action="store_true", help="generate and compare with --reward-model")
    pref.add_argument("--max-prompts", type=int, default=None, help="prompts for the win rate")
    pref.add_argument("--max-new-tokens", type=int, default=128)
    pref.add_argument("--temperature", type=float, default=0.7)
    pref.add_argument("--top-p", type=float, default=0.9)
    pref.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    pref.add_argument("--tie-margin", type=float, default=0.0, help="score differences up to this are ties")
    pref.add_argument("--bootstrap", type=int, default=1000)
    pref.add_argument("--seed", type=int, default=0)
    pref.add_argument("--output", default=None, help="folder for results.json and results.md")
    dist = sub.add_parser("distalign", help="the distributional-alignment benchmark")
    dist.add_argument("--model", required=True, help="a local causal LM (folder or id)")
    dist.add_argument(
        "--data", nargs="+", required=True, help="benchmark files (<GROUP>_data.json, data.json, .jsonl)"
    )
    dist.add_argument(
        "--format", default="auto", choices=["auto", "opinionqa", "nytimes", "globalopinions", "jsonl"]
    )
    dist.add_argument("--methods", default="logp,sequence,verbalize")
    dist.add_argument("--steering", default="none,persona,fewshot")
    dist.add_argument("--max-questions", type=int, default=None, help="per file, the first N questions")
    dist.add_argument("--samples", type=int, default=30, help="N letters of the sequence method")
    dist.add_argument("--batch-size", type=int, default=16)
    dist.add_argument("--bootstrap", type=int, default=1000)
    dist.add_argument("--seed", type=int, default=0)
    dist.add_argument("--output", default=None, help="folder for results.json and results.md")


def _write(output: str | None, result: dict, table: str) -> None:
    print(table)
    if output:
        os.makedirs(output, exist_ok=True)
        with open(os.path.join(output, "results.json"), "w") as f:
            json.dump(result, f, indent=1, default=float)
        with open(os.path.join(output, "results.md"), "w") as f:
            f.write(table + "\n")


def run_preference(args) -> int:
    from transformers import AutoTokenizer

    from dora.data import load_rows
    from dora.eval import preference as P

    data = load_rows(args.dataset, args.split)
    targets = [s for s in (args.target_sources or "").split(",") if s]
    data = P.select_target_rows(data, targets, args.source_column)
    tok = AutoTokenizer.from_pretrained(args.model)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    result, lines = {"n_rows": len(data)}, ["| metric | value |", "|---|---|"]
    if args.ref_model:
        r = P.implicit_reward_accuracy(
            args.model,
            args.ref_model,
            tok,
            data,
            beta=args.beta,
            batch_size=args.batch_size,
            source_column=args.source_column,
            bootstrap=args.bootstrap,
            seed=args.seed,
        )
        result["implicit_reward"] = r
        lo, hi = r["accuracy_ci95"]
        lines += [
            f"| implicit-reward accuracy | {r['accuracy']:.3f} ({lo:.3f}–{hi:.3f}) |",
            f"| implicit-reward margin | {r['margin']:.4f} |",
        ]
        lines += [
            f"| accuracy, {s} | {v['accuracy']:.3f} (n={v['n']}) |" for s, v in r.get("by_source", {}).items()
        ]
    rm = P.RewardModel(args.reward_model, args.batch_size) if args.reward_model else None
    if rm is not None:
        r = P.reward_model_accuracy(rm, data, bootstrap=args.bootstrap, seed=args.seed)
        result["reward_model"] = r
        lines.append(f"| reward-model accuracy | {r['accuracy']:.3f} |")
    if args.win_rate:
        if rm is None or not args.ref_model:
            raise SystemExit("--win-rate needs --reward-model and --ref-model")
        prompts = list(dict.fromkeys(str(p) for p in data["prompt"]))[: args.max_prompts]
        r = P.win_rate(
            args.model,
            args.ref_model,
            tok,
            rm,
            prompts,
            tie_margin=args.tie_margin,
            bootstrap=args.bootstrap,
            seed=args.seed,
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            do_sample=not args.greedy,
            temperature=args.temperature,
            top_p=args.top_p,
        )
        result["win_rate"] = r
        lo, hi = r["win_ci95"]
        lines.append(
            f"| win / tie / lose vs reference | {r['win']:.3f} ({lo:.3f}–{hi:.3f}) / {r['tie']:.3f} / "
            f"{r['lose']:.3f} |"
        )
    if len(lines) == 2:
        raise SystemExit("nothing to evaluate: give --ref-model and/or --reward-model")
    _write(args.output, result, "\n".join(lines))
    return 0


def run_distalign(args) -> int:
    from dora.eval import distalign as D

    items = []
    for path in args.data:
        loaded = D.load_benchmark(path, args.format)
        if args.max_questions:
            keep = list(dict.fromkeys(it.qid for it in loaded))[: args.max_questions]
            loaded = [it for it in loaded if it.qid in set(keep)]
        items += loaded
    runner = D.ModelRunner(args.model, args.batch_size)
    report = D.evaluate(
        runner,
        items,
        methods=[m for m in args.methods.split(",") if m],
        steerings=[s for s in args.steering.split(",") if s],
        samples=args.samples,
        seed=args.seed,
        bootstrap=args.bootstrap,
    )
    _write(args.output, report, D.markdown(report))
    return 0


def run(args) -> int:
    return run_preference(args) if args.eval_command == "preference" else run_distalign(args)
