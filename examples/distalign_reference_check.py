"""Score the benchmark authors' stored model outputs with `dora eval distalign --predictions` and compare the
leaderboard with theirs (`results/leaderboard_distrib_alignment.csv`, the paper's Table 2; GPT-4: verbalize
0.229, sequence 0.278, log-p 0.550, knowledge-to-simulation gap 21.35%).

    git clone https://github.com/nicolemeister/benchmarking-distributional-alignment bench
    python examples/distalign_reference_check.py --repo bench --output out/reference-check

It converts the repository's `results/<dataset>/<method>/<model>/task{1,3_easy_hard}/...` files (persona and
few-shot steering) into our predictions format, keyed by option text, then runs the CLI on the repository's
own data files with the paper's groups and the reference's failed-parse scoring. `--as-given` scores the
vectors without renormalising them, as the reference code does (it matters for models whose outputs lose
mass off the options, e.g. llama3-70b).
"""

import argparse
import ast
import csv
import json
import os

from dora.cli import main

LABELS = {"verbalize": "V", "sequence": "Seq", "logprobs": "Log-p"}
METHOD_DIRS = {"express_distribution": "verbalize", "sequence": "sequence", "model_logprobs": "logprobs"}
TASKS = {"task1": "persona", "task3_easy_hard": "few_shot"}
OQA_GROUPS = {"POLPARTY": ["Democrat", "Republican"], "SEX": ["Male", "Female"], "RACE": ["Black", "White"]}
NYT_GROUPS = {"POLPARTY": ["Democrat", "Republican"], "SEX": ["Male", "Female"]}

parser = argparse.ArgumentParser()
parser.add_argument("--repo", required=True, help="a clone of nicolemeister/benchmarking-distributional-alignment")
parser.add_argument("--model", default="gpt-4", help="a model folder under results/<dataset>/<method>/")
parser.add_argument("--output", default="reference-check")
parser.add_argument("--tolerance", type=float, default=0.003)
parser.add_argument("--as-given", action="store_true", help="no renormalisation (dora eval --no-renormalize)")
args = parser.parse_args()

with open(os.path.join(args.repo, "results/leaderboard_distrib_alignment.csv"), encoding="utf-8") as f:
    theirs = {r["Model Name"]: r["Alignment Mean"] for r in csv.DictReader(f)}
paper = {
    m: float(theirs[f"{args.model} ({label})"]) for m, label in LABELS.items() if theirs.get(f"{args.model} ({label})")
}

oqa_dir = os.path.join(args.repo, "opinions_qa/data/human_resp/Pew_American_Trends_Panel_disagreement_100")
oqa_files = {a: os.path.join(oqa_dir, f"{a}_data.json") for a in OQA_GROUPS}
nyt_file = os.path.join(args.repo, "nytimes/data.json")
gv_file = os.path.join(args.repo, "Global_Values/data/data.json")
load = lambda p: json.load(open(p, encoding="utf-8"))  # noqa: E731
oqa = {a: load(p) for a, p in oqa_files.items()}
nyt, gv = load(nyt_file), load(gv_file)


def row(dataset, question, group, method, steering, letters: dict, options: list):
    """The reference's per-letter averages -> {option text: share}; all zero (an unreadable answer) -> null."""
    dist = {options[ord(k) - ord("A")]: float(v) for k, v in letters.items() if ord(k) - ord("A") < len(options)}
    dist = dist if sum(dist.values()) > 0 else None
    return {"dataset": dataset, "question": question, "group": group, "method": method, "steering": steering,
            "distribution": dist}  # fmt: skip


rows = []
results = os.path.join(args.repo, "results")
for method_dir, method in METHOD_DIRS.items():
    for task, steering in TASKS.items():
        wave = "Pew_American_Trends_Panel_disagreement_100"
        base = os.path.join(results, "opinionqa", method_dir, args.model, task, wave)
        for attribute, groups in OQA_GROUPS.items():
            for g in groups:
                path = os.path.join(base, attribute, f"{g}.json")
                for q, r in (load(path) if os.path.isfile(path) else {}).items():
                    options = list(oqa[attribute][q][g])  # the reference letters the group's own answer keys
                    rows.append(row("opinionqa", q, g, method, steering, r["avg_actual_results"], options))
        for attribute, groups in NYT_GROUPS.items():
            for g in groups:
                path = os.path.join(results, "nytimes", method_dir, args.model, task, attribute, f"{g}.json")
                for q, r in (load(path) if os.path.isfile(path) else {}).items():
                    rows.append(row("nytimes", q, g, method, steering, r["avg_actual_results"], nyt[q]["MC_options"]))
        for rank in range(3):
            path = os.path.join(results, "globalvalues", method_dir, args.model, task, "globalvalues", f"{rank}.json")
            for q, r in (load(path) if os.path.isfile(path) else {}).items():
                options = ast.literal_eval(gv[q]["MC_options"])
                rows.append(row("globalvalues", q, gv[q]["countries"][rank], method, steering,
                                r["avg_actual_results"], options))  # fmt: skip

os.makedirs(args.output, exist_ok=True)
preds = os.path.join(args.output, "predictions_in.jsonl")
with open(preds, "w", encoding="utf-8") as f:
    for r in rows:
        f.write(json.dumps(r) + "\n")
print(f"{len(rows)} predictions from {results} -> {preds}")

rc = main(["eval", "distalign", "--predictions", preds, "--data", *oqa_files.values(), nyt_file, gv_file,
      "--groups", "paper", "--failed-parse", "zero", "--output", args.output,
      *(["--no-renormalize"] if args.as_given else [])])  # fmt: skip
if rc:  # the CLI has printed its one-line error
    raise SystemExit(rc)
board = json.load(open(os.path.join(args.output, "leaderboard.json")))
ok = True
for method, expected in paper.items():
    got = board[method]["tvd"]
    good = abs(got - expected) <= args.tolerance
    ok &= good
    print(f"{method:>10}: {got:.4f}  reference {expected:.4f}  {'ok' if good else 'DIFFERS'}")
if board.get("gap") is not None and "verbalize" in paper and "sequence" in paper:
    print(f"       gap: {100 * board['gap']:.2f}%  reference {100 * (paper['sequence'] / paper['verbalize'] - 1):.2f}%")
raise SystemExit(0 if ok else 1)
