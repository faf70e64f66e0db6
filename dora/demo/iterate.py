"""`dora demo --iterate`: iterative DPO against iterative DoRA in the demo world (``dora.synthetic``).

Per seed: the world, the tiny Llama and its SFT as in ``dora demo``; then two runs of ``dora.iterate`` from
the same SFT checkpoint, the same initial pool (the world's human + chatty + terse_bot mixture) and the same
judge: DPO (``objective="mean"``, unit weights) and DoRA (``objective="dora"``, the source classifier refit
on the grown pool each round, ``human`` the target). Each round the policy answers every prompt k times; the
judge has the world's length bias: with probability ``judge_bias`` the longer answer wins (the correct one
between answers of equal length), otherwise the correct one (the shorter between two equally right ones).
Evaluation per round: human-split preference accuracy, task accuracy of greedy answers, and the win rate
against the SFT model judged by correctness.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import statistics
import time

from dora.synthetic import WorldConfig, answer_of, build_model, build_tokenizer, make_world, parse_answer

# as `dora demo` (world, SFT, β, learning rate, batch); each round: every prompt `repeats` times, k = 4
ITERATE_DEFAULT = {"seeds": 3, "n_train": 1600, "n_test": 400, "sft_epochs": 6, "rounds": 3, "lr": 1e-4, "repeats": 4}
ITERATE_QUICK = {"seeds": 1, "n_train": 300, "n_test": 100, "sft_epochs": 2, "rounds": 2, "lr": 1e-4, "repeats": 1}
RUNS = {"DPO": {"objective": "mean", "weights": "none"}, "DoRA": {"objective": "dora", "weights": "classifier"}}


def _rng(seed: int, i: int, prompt: str, responses: list[str]) -> random.Random:
    """A generator fixed by the judge's inputs, so a resumed run gets the verdicts an uninterrupted one got."""
    key = json.dumps([seed, i, prompt, responses]).encode()
    return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))


class LengthBiasedJudge:
    """Scores k answers to an addition prompt: with probability ``bias`` by length (longer first, then
    correct first), otherwise by correctness (correct first, then shorter first)."""

    def __init__(self, bias: float = 0.8, seed: int = 0):
        self.bias, self.seed = bias, seed

    def __call__(self, prompts: list[str], responses: list[list[str]]) -> list[list[float]]:
        out = []
        for i, (p, rs) in enumerate(zip(prompts, responses)):
            c = answer_of(p)
            by_length = _rng(self.seed, i, p, rs).random() < self.bias
            right = [float(parse_answer(r) == c) for r in rs]
            n = [len(r.strip()) for r in rs]
            out.append([n[j] + 0.5 * right[j] if by_length else right[j] - n[j] / 1000 for j in range(len(rs))])
        return out


def correctness_judge(prompts: list[str], responses: list[list[str]]) -> list[list[float]]:
    """The human judge of the demo world: 1 for an answer whose first integer is the sum, else 0."""
    return [[float(parse_answer(r) == answer_of(p)) for r in rs] for p, rs in zip(prompts, responses)]


def _write_jsonl(path: str, rows: list[dict]) -> None:
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def run_seed(cfg: WorldConfig, base: dict, out_dir: str, epochs: int) -> dict:
    """SFT once, then iterative DPO and iterative DoRA from it; returns {run: [round reports]}."""
    import torch

    from dora.demo import generation_accuracy, sft
    from dora.iterate import IterateConfig, iterate

    torch.manual_seed(cfg.seed)
    os.makedirs(out_dir, exist_ok=True)
    world = make_world(cfg)
    keep = ("prompt", "chosen", "rejected", "source")
    pool = [{k: r[k] for k in keep} for r in world["train"]]
    test = [{k: r[k] for k in keep} for r in world["test"]]
    _write_jsonl(os.path.join(out_dir, "pool.jsonl"), pool)
    _write_jsonl(os.path.join(out_dir, "test.jsonl"), test)
    sft_dir = os.path.join(out_dir, "sft")
    if not os.path.isfile(os.path.join(sft_dir, "config.json")):
        tokenizer = build_tokenizer(os.path.join(out_dir, "base"))
        model = build_model(os.path.join(out_dir, "base"), tokenizer, seed=cfg.seed)
        sft(model, tokenizer, world["sft"], epochs=base["sft_epochs"], seed=cfg.seed)
        model.save_pretrained(sft_dir)
        tokenizer.save_pretrained(sft_dir)
    prompts = sorted({r["prompt"] for r in pool}) * base["repeats"]
    test_prompts = [r["prompt"] for r in test]

    def task_accuracy(policy_dir: str) -> dict:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(policy_dir)
        return {"task_accuracy": generation_accuracy(model, AutoTokenizer.from_pretrained(policy_dir), test_prompts)}

    runs = {}
    for name, spec in RUNS.items():
        config = IterateConfig(
            model=sft_dir,
            output_dir=os.path.join(out_dir, name),
            rounds=base["rounds"],
            samples_per_prompt=4,
            weights=spec["weights"],
            classifier={"backend": "tfidf", "normalize": True},
            generation={"max_new_tokens": 20, "temperature": 1.0, "batch_size": 128},
            training={
                "loss_type": "sigmoid",
                "objective": spec["objective"],
                "beta": 0.1,
                "learning_rate": base["lr"],
                "lr_scheduler_type": "linear",
                "num_train_epochs": epochs,
                "per_device_train_batch_size": 32,
            },  # fmt: skip
            seed=cfg.seed,
        )
        runs[name] = iterate(
            config, pool=pool, judge=LengthBiasedJudge(cfg.judge_bias, cfg.seed), prompts=prompts,
            eval_data=test, eval_judge=correctness_judge, eval_fn=task_accuracy,
        )  # fmt: skip
        for rep in runs[name][1:]:
            rep["labels"] = label_quality(os.path.join(config.output_dir, f"round_{rep['round']}", "pool.jsonl"))
    return runs


def label_quality(pool_path: str) -> dict:
    """Per source of a round's pool: of the pairs with exactly one correct answer, the share whose chosen
    answer is the correct one (the judge agrees with the human), and the mean weight of agreeing and of
    disagreeing pairs."""
    with open(pool_path) as f:
        rows = [json.loads(line) for line in f]
    out = {}
    for source in sorted({r["source"] for r in rows}):
        agree, disagree = [], []
        for r in rows:
            if r["source"] != source:
                continue
            c = answer_of(r["prompt"])
            good, bad = parse_answer(r["chosen"]) == c, parse_answer(r["rejected"]) == c
            if good != bad:
                (agree if good else disagree).append(float(r.get("dora_weight", 1.0)))
        n = len(agree) + len(disagree)
        out[source] = {
            "informative_pairs": n,
            "judge_agrees": len(agree) / n if n else None,
            "weight_agree": statistics.fmean(agree) if agree else None,
            "weight_disagree": statistics.fmean(disagree) if disagree else None,
        }
    return out


# --------------------------------------------------------------------------- reporting


def _series(per_seed: list[dict], run: str, get) -> list[list[float | None]]:
    """[seed][round] values."""
    return [[get(rep) for rep in seed[run]] for seed in per_seed]


def _mean_sd(xs: list[float]) -> str:
    if any(x is None for x in xs):
        return "–"
    m = statistics.fmean(xs)
    s = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{100 * m:.1f} ± {100 * s:.1f}"


METRICS = {
    "human-split preference accuracy (%)": lambda rep: rep["eval"].get("preference_accuracy"),
    "task accuracy (%)": lambda rep: rep["eval"].get("task_accuracy"),
    "win rate vs SFT (%)": lambda rep: rep["eval"].get("win_rate"),
}


def markdown(per_seed: list[dict]) -> str:
    rounds = len(per_seed[0]["DPO"])
    lines = []
    for title, get in METRICS.items():
        lines += [
            f"**{title}**, mean ± sd over {len(per_seed)} seed(s); per seed in brackets",
            "",
            "| round | " + " | ".join(RUNS) + " |",
            "|---|" + "---|" * len(RUNS),
        ]
        for r in range(rounds):
            cells = []
            for run in RUNS:
                xs = [s[r] for s in _series(per_seed, run, get)]
                per = ", ".join("–" if x is None else f"{100 * x:.1f}" for x in xs)
                cells.append(f"{_mean_sd(xs)} [{per}]")
            lines.append(f"| {r} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "**DoRA's pool and weights per round** (mean over seeds)",
        "",
        "| round | pool | policy-written (%) | classifier AUC | weight: policy rows | weight: human rows "
        "| policy rows' share of the weight (%) | ESS / batch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in range(1, rounds):
        reps = [s["DoRA"][r] for s in per_seed]

        def avg(get, reps=reps):
            vals = [get(x) for x in reps]
            return None if any(v is None for v in vals) else statistics.fmean(vals)

        w = lambda k: avg(lambda x: x["weights"].get(k))  # noqa: E731
        lines.append(
            f"| {r} | {avg(lambda x: x['pool_size']):.0f} | {100 * avg(lambda x: x['policy_share']):.1f} "
            f"| {w('roc_auc'):.3f} | {w('mean_policy_rows'):.3f} | {w('mean_target_rows'):.3f} "
            f"| {100 * w('weight_share_policy_rows'):.1f} | {avg(lambda x: x['train']['ess']):.1f} / "
            f"{reps[0]['train']['batch_size']} |"
        )
    lines += ["", "**What the policy's pairs teach** (mean over seeds): of the round's policy-written pairs with one "
              "right and one wrong answer, the share the judge labels right, and DoRA's mean weight of right- and "
              "wrong-labelled pairs", "",
              "| round | informative pairs | judge right (%) | DoRA weight, right-labelled "
              "| DoRA weight, wrong-labelled | DoRA weight, human pairs |", "|---|---|---|---|---|---|"]  # fmt: skip
    for r in range(1, rounds):
        q = [s["DoRA"][r].get("labels", {}).get(f"policy_r{r}") for s in per_seed]
        if any(x is None for x in q):
            continue
        hum = [s["DoRA"][r]["labels"].get("human", {}).get("weight_agree") for s in per_seed]

        def m(key, q=q):
            vals = [x[key] for x in q if x[key] is not None]
            return statistics.fmean(vals) if vals else float("nan")

        lines.append(
            f"| {r} | {m('informative_pairs'):.0f} | {100 * m('judge_agrees'):.1f} | {m('weight_agree'):.3f} "
            f"| {m('weight_disagree'):.3f} | {statistics.fmean(h for h in hum if h is not None):.3f} |"
        )
    return "\n".join(lines)


def plot(per_seed: list[dict], path: str) -> None:
    """The metrics per round (one line per seed and run), and what DoRA's weights do with the policy's rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = list(range(len(per_seed[0]["DPO"])))
    fig, axes = plt.subplots(1, len(METRICS) + 1, figsize=(5 * (len(METRICS) + 1), 3.8))
    for ax, (title, get) in zip(axes, METRICS.items()):
        for run, color in zip(RUNS, ("#777", "#c33")):
            for k, ys in enumerate(_series(per_seed, run, get)):
                pts = [(r, 100 * y) for r, y in enumerate(ys) if y is not None]
                if pts:
                    ax.plot(*zip(*pts), "o-", color=color, alpha=0.9 if k == 0 else 0.45, label=run if k == 0 else None)
        ax.set_title(title, fontsize=10)
    axes[0].axhline(50, color="#bbb", ls=":", lw=1)
    axes[0].legend()
    ax = axes[-1]
    for key, label, color in (("mean_target_rows", "human rows", "#36c"), ("mean_policy_rows", "policy rows", "#c33")):
        for k, seed in enumerate(per_seed):
            pts = [(rep["round"], rep["weights"][key]) for rep in seed["DoRA"][1:]]
            ax.plot(*zip(*pts), "o-", color=color, alpha=0.9 if k == 0 else 0.45, label=label if k == 0 else None)
    ax.set_title("DoRA: mean weight of a row", fontsize=10)
    ax.legend()
    for ax in axes:
        ax.set_xticks(rounds)
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_iterate(args) -> int:
    """The ``dora demo --iterate`` entry point (flags of ``dora demo``: --quick, --seeds, --output, ...)."""
    from dataclasses import replace

    base = dict(ITERATE_QUICK if args.quick else ITERATE_DEFAULT)
    if getattr(args, "rounds", None):
        base["rounds"] = args.rounds
    seeds = args.seeds or base["seeds"]
    cfg = WorldConfig(
        n_train=args.n_train or base["n_train"], n_test=base["n_test"], synthetic_share=args.synthetic_share,
        judge_bias=args.judge_bias, noise=args.noise, style_overlap=args.style_overlap,
    )  # fmt: skip
    out = args.output
    os.makedirs(out, exist_ok=True)
    t0 = time.time()
    per_seed = [
        run_seed(replace(cfg, seed=s), base, os.path.join(out, f"seed{s}"), args.epochs or 1) for s in range(seeds)
    ]
    table = markdown(per_seed)
    with open(os.path.join(out, "iterate.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(out, "iterate.json"), "w") as f:
        json.dump({"config": cfg.to_dict(), "settings": base, "per_seed": per_seed}, f, indent=1)
    plot(per_seed, os.path.join(out, "iterate.png"))
    print(table)
    print(f"\nwrote {out}/iterate.md, iterate.json, iterate.png in {time.time() - t0:.0f} s")
    return 0
