"""The default backend: TF-IDF over the response (words, punctuation and bigrams) and the prompt (words),
then logistic regression. Seconds on a CPU for 100k responses."""

from __future__ import annotations

import json
import os

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from dora.classifier.base import SourceClassifier

TOKENS = r"(?u)\b\w+\b|[^\w\s]"  # words of any length and single punctuation marks: style lives there


def _vectorizer(ngrams: tuple[int, int], max_features: int | None, vocabulary=None) -> TfidfVectorizer:
    return TfidfVectorizer(
        token_pattern=TOKENS,
        ngram_range=ngrams,
        sublinear_tf=True,
        lowercase=False,
        max_features=max_features,
        vocabulary=vocabulary,
        dtype=np.float32,
    )


class TfidfClassifier(SourceClassifier):
    backend = "tfidf"

    def __init__(
        self,
        calibration: str = "platt",
        seed: int = 0,
        C: float = 1.0,
        max_features: int = 200_000,
        use_prompt: bool = True,
    ):
        super().__init__(calibration, seed)
        self.C, self.max_features, self.use_prompt = C, max_features, use_prompt
        self.response_vec = _vectorizer((1, 2), max_features)
        self.prompt_vec = _vectorizer((1, 1), max_features // 4)
        self.model: LogisticRegression | None = None

    def _features(self, prompts, responses, fit: bool = False):
        f = self.response_vec.fit_transform if fit else self.response_vec.transform
        x = f(responses)
        if fit and self.use_prompt and not any(str(p).strip() for p in prompts):
            self.use_prompt = False  # no prompt text at all (the column is optional): nothing to learn from it
        if self.use_prompt:
            g = self.prompt_vec.fit_transform if fit else self.prompt_vec.transform
            x = sp.hstack([x, g(prompts)], format="csr")
        return x

    def featurize(self, prompts, responses, fit: bool = False):
        """The TF-IDF matrix (label-free: cross-fitting computes it once and shares it between folds)."""
        return self._features(prompts, responses, fit=fit)

    def fit_matrix(self, x, labels) -> TfidfClassifier:
        self.model = LogisticRegression(C=self.C, max_iter=2000, random_state=self.seed).fit(x, labels)
        return self

    def scores_matrix(self, x) -> np.ndarray:
        return self.model.predict_proba(x)[:, 1]

    def _fit(self, prompts, responses, labels):
        self.fit_matrix(self._features(prompts, responses, fit=True), labels)

    def _scores(self, prompts, responses):
        return self.scores_matrix(self._features(prompts, responses))

    def _config(self):
        return {"C": self.C, "max_features": self.max_features, "use_prompt": self.use_prompt}

    def _arrays(self):
        arrays = {
            "coef": self.model.coef_,
            "intercept": self.model.intercept_,
            "response_idf": self.response_vec.idf_,
        }
        if self.use_prompt:
            arrays["prompt_idf"] = self.prompt_vec.idf_
        return arrays

    def _save_extra(self, path):
        vocab = {"response": {k: int(v) for k, v in self.response_vec.vocabulary_.items()}}
        if self.use_prompt:
            vocab["prompt"] = {k: int(v) for k, v in self.prompt_vec.vocabulary_.items()}
        with open(os.path.join(path, "vocabulary.json"), "w") as f:
            json.dump(vocab, f)

    @classmethod
    def _restore(cls, path, cfg, arrays):
        clf = cls(
            seed=cfg.get("seed", 0),
            C=cfg["C"],
            max_features=cfg["max_features"],
            use_prompt=cfg["use_prompt"],
        )
        with open(os.path.join(path, "vocabulary.json")) as f:
            vocab = json.load(f)
        clf.response_vec = _vectorizer((1, 2), None, vocab["response"])
        clf.response_vec.idf_ = arrays["response_idf"]
        if clf.use_prompt:
            clf.prompt_vec = _vectorizer((1, 1), None, vocab["prompt"])
            clf.prompt_vec.idf_ = arrays["prompt_idf"]
        model = LogisticRegression()
        model.coef_, model.intercept_ = arrays["coef"], arrays["intercept"]
        model.classes_ = np.array([0, 1])
        clf.model = model
        return clf
