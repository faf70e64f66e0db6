"""The methods `dora select` compares: each a set of `dora train` keys and the rows it trains on.

| name            | objective / loss                  | rows                                                     |
|-----------------|-----------------------------------|----------------------------------------------------------|
| DPO             | mean of the sigmoid loss          | all                                                      |
| DPO (target)    | mean of the sigmoid loss          | the target-source rows only                              |
| Label reweight  | reweight: mean h·ℓ                | all; h = 1/α on target rows, 1 elsewhere (``label_weight``) |
| Reweight        | reweight: mean h·ℓ                | all; h = ``dora_weight`` (dQ₀/dP from `dora classify`)   |
| KL-DRO          | λ log mean exp(ℓ/λ)               | all                                                      |
| DoRA λ=…        | λ log mean exp(h·ℓ/λ)             | all; h = ``dora_weight``                                 |
| rDPO            | the robust loss, ε = 0.2          | all                                                      |

α is the target share of the pilot's training rows: label reweighting multiplies the target rows' loss by 1/α
(the baseline a source label alone gives; the demo's "Label reweight").
"""

from __future__ import annotations

import re

# rows: "all" (the training rows), "target" (their target-source rows), "label" (all, with label_weight)
CANDIDATES: dict[str, dict] = {
    "DPO": {"keys": {"loss_type": "sigmoid", "objective": "mean"}, "rows": "all"},
    "DPO (target)": {"keys": {"loss_type": "sigmoid", "objective": "mean"}, "rows": "target"},
    "Label reweight": {
        "keys": {"loss_type": "sigmoid", "objective": "reweight", "weight_column": "label_weight"},
        "rows": "label",
    },
    "Reweight": {"keys": {"loss_type": "sigmoid", "objective": "reweight"}, "rows": "all", "weights": True},
    "KL-DRO": {"keys": {"loss_type": "sigmoid", "objective": "kl_dro", "dro_lambda": 1.0}, "rows": "all"},
    "rDPO": {"keys": {"loss_type": "robust", "objective": "mean", "label_smoothing": 0.2}, "rows": "all"},
}


def _dora(lam: float) -> dict:
    return {"keys": {"loss_type": "sigmoid", "objective": "dora", "dro_lambda": lam}, "rows": "all", "weights": True}


CANDIDATES.update({f"DoRA λ={lam:g}": _dora(lam) for lam in (0.5, 1.0, 2.0)})
ALIASES = {"dora": "DoRA λ=1", "target": "DPO (target)", "human": "DPO (target)", "label": "Label reweight"}
DEFAULT = list(CANDIDATES)
LABEL_WEIGHT = "label_weight"


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9.=]", "", name.lower().replace("lambda", "λ").replace("λ", "l"))


def parse_candidates(text: str | list[str] | None) -> list[str]:
    """Candidate names from ``"DPO,DoRA λ=1,rDPO"`` (case and spaces ignored; ``dora-lambda=0.5`` or ``DoRA λ=0.5``
    names DoRA at any λ > 0). The baseline DPO comes first, added when missing; an unknown name is an error."""
    if text is None:
        return list(DEFAULT)
    names = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    known = {_key(n): n for n in CANDIDATES} | {_key(a): n for a, n in ALIASES.items()}
    out = []
    for name in names:
        key = _key(name)
        m = re.fullmatch(r"dora-?l?=?([0-9.e+-]+)", key.replace("dora-", "dora"))
        if key in known:
            out.append(known[key])
        elif m:
            lam = _positive(m.group(1), name)
            out.append(f"DoRA λ={lam:g}")
        else:
            raise ValueError(f"--candidates: unknown candidate {name!r}; choose from {', '.join(CANDIDATES)}")
    if len(set(out)) != len(out):
        raise ValueError(f"--candidates: a candidate is named twice: {names}")
    return ["DPO", *[n for n in out if n != "DPO"]]


def _positive(text: str, name: str) -> float:
    try:
        lam = float(text)
    except ValueError:
        lam = float("nan")
    if not lam > 0 or lam == float("inf"):
        raise ValueError(f"--candidates: {name!r}: λ must be a positive number")
    return lam


def spec(name: str) -> dict:
    """The keys and rows of a candidate named by ``parse_candidates``."""
    if name in CANDIDATES:
        return CANDIDATES[name]
    return _dora(float(name.split("=", 1)[1]))


def slug(name: str) -> str:
    """A folder name for a candidate: ``DoRA λ=0.5`` -> ``dora_lambda0.5``."""
    return re.sub(r"[^a-z0-9.]+", "_", name.lower().replace("λ=", "lambda")).strip("_")
