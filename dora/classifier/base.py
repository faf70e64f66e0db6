"""The source-classifier interface, probability calibration, and safe (pickle-free) persistence.

A classifier scores (prompt, response) pairs with P(target | x, y). Every backend implements ``fit``,
``predict_proba``, ``save_pretrained`` and ``from_pretrained``; arrays go to ``weights.safetensors`` and
everything else to ``classifier.json``, so loading a classifier never runs code.
"""

from __future__ import annotations

import json
import os
from typing import ClassVar

import numpy as np
from safetensors.numpy import load_file, save_file
from scipy.optimize import minimize
from scipy.special import expit  # the logistic function without overflow
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

CONFIG_FILE = "classifier.json"
WEIGHTS_FILE = "weights.safetensors"
CEILING_LR_MIN = 10.83  # chi-square(1) at p = 0.001: the smallest likelihood gain that keeps a fitted ceiling


class Calibrator:
    """Maps raw scores to calibrated probabilities: "platt" (logistic on the logit, Platt 1999), "isotonic"
    (Zadrozny & Elkan 2002) or "none".

    ``ceiling``: Platt's map times a fitted maximum m, c = m·σ(a·logit(p) + b), for a positive class whose
    posterior never reaches 1. A trusted sample scored against a pool that contains the target is such a
    class: where the text is pure target, P(trusted | x) = N_T / (N_T + α N_P) < 1 (a plateau), elsewhere it
    falls to 0. Plain Platt has no plateau: fitting one sigmoid through the plateau and the zeros flattens its
    slope and lifts the other sources' probabilities (docs/classifier.md, "Why no-label weights were soft")."""

    def __init__(self, method: str = "platt", ceiling: bool = False):
        if method not in ("platt", "isotonic", "none"):
            raise ValueError(f"calibration must be 'platt', 'isotonic' or 'none', got {method!r}")
        self.method, self.ceiling = method, ceiling
        self.a, self.b, self.m = 1.0, 0.0, 1.0
        self.x: np.ndarray | None = None
        self.y: np.ndarray | None = None

    @staticmethod
    def _logit(p: np.ndarray) -> np.ndarray:
        p = np.clip(p, 1e-6, 1 - 1e-6)
        return np.log(p) - np.log1p(-p)

    def fit(self, p: np.ndarray, labels: np.ndarray) -> Calibrator:
        if self.method == "platt":
            lr = LogisticRegression(C=1e6, max_iter=1000).fit(self._logit(p)[:, None], labels)
            self.a, self.b = float(lr.coef_[0, 0]), float(lr.intercept_[0])
            if self.ceiling:
                self.a, self.b, self.m = _fit_ceiling(self._logit(p), np.asarray(labels, np.float64), self.a, self.b)
        elif self.method == "isotonic":
            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(p, labels)
            self.x, self.y = iso.X_thresholds_.astype(np.float64), iso.y_thresholds_.astype(np.float64)
        return self

    def __call__(self, p: np.ndarray) -> np.ndarray:
        if self.method == "platt":
            return self.m * expit(self.a * self._logit(p) + self.b)
        if self.method == "isotonic":
            return np.interp(p, self.x, self.y)
        return p

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        arrays = {} if self.x is None else {"calibration_x": self.x, "calibration_y": self.y}
        return {"method": self.method, "a": self.a, "b": self.b, "m": self.m}, arrays

    @classmethod
    def from_state(cls, cfg: dict, arrays: dict[str, np.ndarray]) -> Calibrator:
        c = cls(cfg["method"])
        c.a, c.b, c.m = cfg["a"], cfg["b"], cfg.get("m", 1.0)  # files written before the ceiling: m = 1
        if "calibration_x" in arrays:
            c.x, c.y = arrays["calibration_x"], arrays["calibration_y"]
        return c


def _fit_ceiling(z: np.ndarray, y: np.ndarray, a: float, b: float) -> tuple[float, float, float]:
    """Maximum-likelihood (a, b, m) of c = m·σ(a·z + b), m = σ(t), started from Platt's (a, b) with m near 1
    and from a steeper slope under the top scores' observed rate; in log space throughout (no overflow)."""

    def nll(theta: np.ndarray) -> float:
        u = theta[0] * z + theta[1]
        log_c = -np.logaddexp(0.0, -theta[2]) - np.logaddexp(0.0, -u)  # log m + log σ(u)
        log_1mc = np.logaddexp(-np.logaddexp(0.0, u), -np.logaddexp(0.0, theta[2]) - np.logaddexp(0.0, -u))
        return float(-np.mean(y * log_c + (1.0 - y) * log_1mc))

    top = np.clip(y[z >= np.quantile(z, 0.9)].mean(), 0.02, 0.98)
    starts = [np.array([a, b, 8.0]), np.array([4.0 * a, 4.0 * b, np.log(top / (1.0 - top))])]
    best = min((minimize(nll, s, method="L-BFGS-B") for s in starts), key=lambda r: r.fun)
    # the ceiling only where the data ask for it (likelihood-ratio test, one parameter, p < 0.001): on scores
    # with no plateau a third parameter would only fit noise
    if 2.0 * len(y) * (nll(np.array([a, b, 40.0])) - best.fun) < CEILING_LR_MIN:
        return a, b, 1.0
    return float(best.x[0]), float(best.x[1]), float(expit(best.x[2]))


class SourceClassifier:
    """P(target | prompt, response). Subclasses implement ``_fit``, ``_scores`` and the array/config state; the
    backends are listed in ``dora.classifier.backends.BACKENDS``."""

    backend: ClassVar[str] = ""

    def __init__(self, calibration: str = "platt", seed: int = 0):
        self.calibrator = Calibrator(calibration)
        self.seed = seed

    # --- to implement
    def _fit(self, prompts: list[str], responses: list[str], labels: np.ndarray) -> None:
        raise NotImplementedError

    def _scores(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        """Uncalibrated P(target) in [0, 1]."""
        raise NotImplementedError

    def _config(self) -> dict:
        return {}

    def _arrays(self) -> dict[str, np.ndarray]:
        return {}

    def _save_extra(self, path: str) -> None:
        pass

    @classmethod
    def _restore(cls, path: str, cfg: dict, arrays: dict[str, np.ndarray]) -> SourceClassifier:
        raise NotImplementedError

    # --- the interface
    def fit(self, prompts: list[str], responses: list[str], labels) -> SourceClassifier:
        """Fit on labelled responses (1 = target source); calibration is fitted apart (``calibrate``)."""
        self._fit(list(prompts), list(responses), np.asarray(labels, dtype=np.int64))
        return self

    def calibrate(self, raw: np.ndarray, labels) -> SourceClassifier:
        """Fit the calibration map on held-out (cross-fitted) raw probabilities."""
        self.calibrator.fit(np.asarray(raw, dtype=np.float64), np.asarray(labels))
        return self

    def predict_raw(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        return np.asarray(self._scores(list(prompts), list(responses)), dtype=np.float64)

    def predict_proba(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        """Calibrated P(target | prompt, response), float64 [N]."""
        return self.calibrator(self.predict_raw(prompts, responses))

    def save_pretrained(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)
        cal_cfg, cal_arrays = self.calibrator.state()
        cfg = {"backend": self.backend, "seed": self.seed, "calibration": cal_cfg, **self._config()}
        with open(os.path.join(path, CONFIG_FILE), "w") as f:
            json.dump(cfg, f, indent=1)
        arrays = {**self._arrays(), **cal_arrays}
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, os.path.join(path, WEIGHTS_FILE))
        self._save_extra(path)

    @classmethod
    def from_pretrained(cls, path: str) -> SourceClassifier:
        """A classifier of this backend saved with ``save_pretrained`` (``dora.classifier.load_classifier``
        reads any backend)."""
        cfg = read_config(path)
        if cfg.get("backend") != cls.backend:
            raise ValueError(f"{path}: a {cfg.get('backend')!r} classifier, not {cls.backend!r}")
        arrays = load_file(os.path.join(path, WEIGHTS_FILE))
        clf = cls._restore(path, cfg, arrays)
        clf.calibrator = Calibrator.from_state(cfg["calibration"], arrays)
        clf.seed = cfg.get("seed", 0)
        return clf


def read_config(path: str) -> dict:
    """The ``classifier.json`` of a saved classifier."""
    with open(os.path.join(path, CONFIG_FILE)) as f:
        return json.load(f)
