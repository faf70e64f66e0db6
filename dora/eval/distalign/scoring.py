"""Stage 4: predictions -> numbers, aggregated as the paper does (Meister et al. 2025, Sec. 4 and Table 2).

Per (question, group) the total variation distance TVD(p, q) = ½‖p − q‖₁. Per dataset the TVDs are pooled
(one mean over every group and question); the headline number of a method pools persona and few-shot
steering and weighs each dataset equally. The knowledge-to-simulation gap is the paper's Eq. 2:
TVD(sequence) / TVD(verbalize) − 1. Intervals: a 95% percentile bootstrap that resamples questions within
each dataset (a question brings all its groups and steerings along).

A prediction that could not be read (``None``) is counted and scored by the ``failed`` policy: ``"zero"``
(the reference's: the all-zero vector, TVD ½), ``"uniform"``, or ``"skip"`` (left out of the means).
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

import numpy as np

from dora.eval.distalign.data import Item
from dora.eval.metrics import js_similarity, normalize, tvd, wasserstein_representativeness

METHODS = ("logprobs", "sequence", "verbalize")
STEERINGS = ("none", "persona", "few_shot")
HEADLINE = ("persona", "few_shot")  # the steerings the paper's leaderboard pools
FAILED = ("zero", "uniform", "skip")
METHOD_ALIASES = {"logp": "logprobs", "log-p": "logprobs", "verbalized": "verbalize", "seq": "sequence"}
STEERING_ALIASES = {"fewshot": "few_shot", "few-shot": "few_shot"}


def canonical(kind: str, name: str) -> str:
    """A method or steering name in its canonical spelling; a ValueError for an unknown one."""
    aliases, known = (METHOD_ALIASES, METHODS) if kind == "method" else (STEERING_ALIASES, STEERINGS)
    n = aliases.get(name, name)
    if n not in known:
        raise ValueError(f"unknown {kind} {name!r}; choose from {', '.join(known)}")
    return n


def item_scores(item: Item, p: np.ndarray | None, failed: str = "zero", mass: float | None = None) -> dict | None:
    """TVD, 1 − JS and (ordered options) the Wasserstein representativeness of one prediction; None when
    a failed prediction is skipped. A failed prediction under ``"zero"`` gets TVD ½ and no JS / Wasserstein.
    With ``mass`` the TVD is taken against the vector as given, ``mass * p`` (the reference's way: mass off
    the options counts as error); JS and Wasserstein always compare distributions."""
    q = item.distribution
    if p is None:
        if failed == "skip":
            return None
        if failed == "zero":
            return {"tvd": 0.5 * float(q.sum()), "js": None, "wasserstein": None}
        p = np.full(len(q), 1.0 / len(q))
    p = np.asarray(p, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"question {item.qid!r}, group {item.group}: {len(p)} values for {len(q)} options")
    out = {"tvd": tvd(q, p), "js": js_similarity(q, p), "wasserstein": None}
    if mass is not None:
        out["tvd"] = 0.5 * float(np.abs(q - mass * p / p.sum()).sum())
    if item.ordinals is not None:
        keep = [i for i, o in enumerate(item.ordinals) if o is not None]
        pos = [item.ordinals[i] for i in keep]
        if len(keep) >= 2 and max(pos) > min(pos) and q[keep].sum() > 0 and p[keep].sum() > 0:
            out["wasserstein"] = wasserstein_representativeness(q[keep], p[keep], pos)
    return out


def pooled(datasets: list[str], values: list[float]) -> tuple[dict[str, float], float | None]:
    """Per dataset the mean of its values (every group and question pooled); overall the equal-weight
    mean over datasets."""
    by: dict[str, list[float]] = defaultdict(list)
    for d, v in zip(datasets, values):
        by[d].append(v)
    means = {d: float(np.mean(v)) for d, v in sorted(by.items())}
    return means, (float(np.mean(list(means.values()))) if means else None)


def bootstrap_pooled(
    datasets: list[str], questions: list[str], values: list[float], *, samples: int = 1000, seed: int = 0
) -> list[float] | None:
    """95% percentile interval of ``pooled``'s overall value when each dataset's questions are resampled with
    replacement. For each dataset in sorted order, the multiplicities of its Q questions (in order of first
    appearance) are ``rng.multinomial(Q, [1/Q] * Q, size=samples)``, ``rng = np.random.default_rng(seed)``."""
    if samples <= 0 or not values:
        return None
    rng = np.random.default_rng(seed)
    per_dataset = []
    for ds in sorted(set(datasets)):
        idx = [i for i, d in enumerate(datasets) if d == ds]
        qids = list(dict.fromkeys(questions[i] for i in idx))
        where = {q: k for k, q in enumerate(qids)}
        total, count = np.zeros(len(qids)), np.zeros(len(qids))
        for i in idx:
            total[where[questions[i]]] += values[i]
            count[where[questions[i]]] += 1
        m = rng.multinomial(len(qids), np.full(len(qids), 1.0 / len(qids)), size=samples)
        per_dataset.append((m @ total) / (m @ count))
    overall = np.mean(per_dataset, axis=0)
    return [float(np.quantile(overall, 0.025)), float(np.quantile(overall, 0.975))]


def _summary(rows: list[dict], key: str, *, bootstrap: int, seed: int) -> dict:
    kept = [r for r in rows if r.get(key) is not None]
    ds, qs, vals = [r["dataset"] for r in kept], [r["qid"] for r in kept], [r[key] for r in kept]
    by_ds, overall = pooled(ds, vals)
    out = {"tvd" if key == "tvd" else key: overall, "ci": bootstrap_pooled(ds, qs, vals, samples=bootstrap, seed=seed),
           "items": len(kept), "by_dataset": {}}  # fmt: skip
    for d in by_ds:
        sub = [r for r in kept if r["dataset"] == d]
        out["by_dataset"][d] = {
            key: by_ds[d],
            "ci": bootstrap_pooled([d] * len(sub), [r["qid"] for r in sub], [r[key] for r in sub],
                                   samples=bootstrap, seed=seed),
            "items": len(sub),
        }  # fmt: skip
    return out


def _failures(rows: list[dict]) -> dict:
    failed = sum(r["prediction"] is None for r in rows)
    out = {"failed": failed, "failed_share": failed / len(rows) if rows else 0.0}
    mass = [r["off_option_mass"] for r in rows if r.get("off_option_mass") is not None]
    if mass:
        out["off_option_mass"] = float(np.mean(mass))
    return out


def discretisation_floor(p, n: int = 30, *, exact_limit: int = 200_000, draws: int = 20_000, seed: int = 0):
    """E[TVD(p, empirical distribution of n draws from p)], the best a sequence of n answers can do on
    average: exact over every composition of n into the options when there are at most ``exact_limit`` of
    them, else a seeded Monte Carlo of ``draws`` draws."""
    from scipy.special import gammaln, xlogy

    p = normalize(p)
    k = len(p)
    if math.comb(n + k - 1, k - 1) <= exact_limit:
        bars = np.array(list(itertools.combinations(range(n + k - 1), k - 1)), dtype=np.int64).reshape(-1, k - 1)
        edges = np.concatenate([np.full((len(bars), 1), -1), bars, np.full((len(bars), 1), n + k - 1)], axis=1)
        counts = np.diff(edges, axis=1) - 1  # stars and bars: every k non-negative counts summing to n
        logpmf = gammaln(n + 1) - gammaln(counts + 1).sum(1) + xlogy(counts, p).sum(1)
        return float(np.sum(np.exp(logpmf) * 0.5 * np.abs(counts / n - p).sum(1)))
    freq = np.random.default_rng(seed).multinomial(n, p, size=draws) / n
    return float(np.mean(0.5 * np.abs(freq - p).sum(axis=1)))


def baselines(items: list[Item], *, samples: int = 30, bootstrap: int = 1000, seed: int = 0) -> dict:
    """TVD of the uniform distribution, of the one-hot true majority answer, and the sampling floor of
    ``samples`` answers, over the scored items, aggregated like the models' headline numbers."""
    floors: dict[tuple, float] = {}

    def floor(it: Item) -> float:
        key = tuple(np.round(it.distribution, 12))
        if key not in floors:
            floors[key] = discretisation_floor(it.distribution, samples, seed=seed)
        return floors[key]

    values = {
        "uniform": [tvd(it.distribution, np.ones(len(it.options))) for it in items],
        "majority": [tvd(it.distribution, np.eye(len(it.options))[int(np.argmax(it.distribution))]) for it in items],
        f"floor_n{samples}": [floor(it) for it in items],
    }  # fmt: skip
    out = {}
    for name, vals in values.items():
        rows = [{"dataset": it.dataset, "qid": it.qid, "tvd": v} for it, v in zip(items, vals)]
        out[name] = _summary(rows, "tvd", bootstrap=bootstrap, seed=seed)
    return out


def score_predictions(
    items: list[Item],
    predictions: list[dict],
    *,
    failed: str = "zero",
    renormalize: bool = True,
    samples: int = 30,
    bootstrap: int = 1000,
    seed: int = 0,
) -> tuple[dict, list[dict]]:
    """Score predictions, each ``{"item": index into items, "method", "steering", "prediction": array or
    None}`` (+ optional ``mass``, ``off_option_mass``, ``failure``, ``text``). Returns (report, per-row
    scores). ``renormalize=False`` takes each TVD against ``mass * prediction``, the vector as given.

    report: ``methods`` (the leaderboard: per method the TVD pooled over the headline steerings, each dataset
    weighted equally, its interval, items, failures, per dataset), ``by_steering`` (per method/steering:
    TVD, 1 − JS, Wasserstein, failures, per dataset), ``baselines``, ``gap`` (Seq / V − 1)."""
    if failed not in FAILED:
        raise ValueError(f"unknown failed-parse policy {failed!r}; choose from {', '.join(FAILED)}")
    rows = []
    for pred in predictions:
        it = items[pred["item"]]
        mass = None if renormalize or pred["prediction"] is None else pred.get("mass", 1.0)
        s = item_scores(it, pred["prediction"], failed, mass)
        rows.append({
            "dataset": it.dataset, "qid": it.qid, "group": it.group, "method": pred["method"],
            "steering": pred["steering"], "options": it.options, "truth": it.distribution.tolist(),
            "prediction": None if pred["prediction"] is None else np.asarray(pred["prediction"]).tolist(),
            "tvd": None if s is None else s["tvd"], "js": None if s is None else s["js"],
            "wasserstein": None if s is None else s["wasserstein"],
            "mass": pred.get("mass"), "off_option_mass": pred.get("off_option_mass"), "failure": pred.get("failure"),
            "text": pred.get("text"),
        })  # fmt: skip
    boot = dict(bootstrap=bootstrap, seed=seed)
    steerings_run = [s for s in STEERINGS if any(r["steering"] == s for r in rows)]
    headline = [s for s in HEADLINE if s in steerings_run] or steerings_run
    methods, by_steering = {}, {}
    for m in METHODS:
        mine = [r for r in rows if r["method"] == m]
        if not mine:
            continue
        top = [r for r in mine if r["steering"] in headline]
        methods[m] = {**_summary(top, "tvd", **boot), **_failures(top), "steerings": headline}
        for s in steerings_run:
            sub = [r for r in mine if r["steering"] == s]
            if sub:
                entry = {**_summary(sub, "tvd", **boot), **_failures(sub)}
                entry["js"] = _summary(sub, "js", bootstrap=0, seed=seed)["js"]
                entry["wasserstein"] = _summary(sub, "wasserstein", bootstrap=0, seed=seed)["wasserstein"]
                by_steering[f"{m}/{s}"] = entry
    seq, verb = methods.get("sequence", {}).get("tvd"), methods.get("verbalize", {}).get("tvd")
    scored = sorted({r["item"] for r in predictions})
    report = {
        "methods": methods,
        "by_steering": by_steering,
        "baselines": baselines([items[i] for i in scored], samples=samples, **boot),
        "gap": seq / verb - 1.0 if seq is not None and verb else None,
        "headline_steerings": headline,
        "failed_parse": failed,
        "renormalized": renormalize,
        "datasets": sorted({items[i].dataset for i in scored}),
        "n_items": len(scored),
        "n_questions": len({(items[i].dataset, items[i].qid) for i in scored}),
    }
    return report, rows


def score(items: list[Item], predictions: list, *, failed: str = "zero", bootstrap: int = 1000, seed: int = 0) -> dict:
    """One prediction per item (arrays, or None for a failed parse): pooled TVD, 1 − JS and Wasserstein
    representativeness, each with ``by_dataset``, plus ``per_item`` TVDs."""
    preds = [{"item": i, "method": "verbalize", "steering": "persona", "prediction": p}
             for i, p in enumerate(predictions)]  # fmt: skip
    report, rows = score_predictions(items, preds, failed=failed, bootstrap=bootstrap, seed=seed)
    entry = report["by_steering"]["verbalize/persona"]
    out = {"tvd": {k: entry[k] for k in ("tvd", "ci", "items", "by_dataset")}, "failed": entry["failed"]}
    out["js"], out["wasserstein"] = entry["js"], entry["wasserstein"]
    out["per_item"] = [r["tvd"] for r in rows]
    return out
