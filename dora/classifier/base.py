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
from scipy.special import expit  # the logistic function without overflow
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

CONFIG_FILE = "classifier.json"
WEIGHTS_FILE = "weights.safetensors"


class Calibrator:
    """Maps raw scores to calibrated probabilities: "platt" (logistic on the logit, Platt 1999), "isotonic"
    (Zadrozny & Elkan 2002) or "none"."""

    def __init__(self, method: str = "platt"):
        if method not in ("platt", "isotonic", "none"):
            raise ValueError(f"calibration must be 'platt', 'isotonic' or 'none', got {method!r}")
        self.method = method
        self.a, self.b = 1.0, 0.0
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
        elif self.method == "isotonic":
            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(p, labels)
            self.x, self.y = iso.X_thresholds_.astype(np.float64), iso.y_thresholds_.astype(np.float64)
        return self

    def __call__(self, p: np.ndarray) -> np.ndarray:
        if self.method == "platt":
            return expit(self.a * self._logit(p) + self.b)
        if self.method == "isotonic":
            return np.interp(p, self.x, self.y)
        return p

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        arrays = {} if self.x is None else {"calibration_x": self.x, "calibration_y": self.y}
        return {"method": self.method, "a": self.a, "b": self.b}, arrays

    @classmethod
    def from_state(cls, cfg: dict, arrays: dict[str, np.ndarray]) -> Calibrator:
        c = cls(cfg["method"])
        c.a, c.b = cfg["a"], cfg["b"]
        if "calibration_x" in arrays:
            c.x, c.y = arrays["calibration_x"], arrays["calibration_y"]
        return c


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
