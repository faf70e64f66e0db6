"""A frozen Hugging Face encoder, mean-pooled over the (prompt, response) pair, then logistic regression."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from tqdm.auto import tqdm

from dora.classifier.base import SourceClassifier


def encode_pairs(tokenizer, prompts, responses, max_length: int):
    return tokenizer(
        prompts, responses, truncation=True, max_length=max_length, padding=True, return_tensors="pt"
    )


class EmbeddingClassifier(SourceClassifier):
    backend = "embedding"

    def __init__(
        self,
        calibration: str = "platt",
        seed: int = 0,
        model_name_or_path: str | None = None,
        C: float = 1.0,
        max_length: int = 256,
        batch_size: int = 32,
    ):
        super().__init__(calibration, seed)
        if model_name_or_path is None:
            raise ValueError("the embedding backend needs a model (--model, an encoder path or Hub id)")
        self.model_name_or_path, self.C = model_name_or_path, C
        self.max_length, self.batch_size = max_length, batch_size
        self._encoder = None
        self.model: LogisticRegression | None = None

    def _load(self):
        if self._encoder is None:
            # transformers' model classes cost seconds to import; the default tfidf backend never needs them
            from transformers import AutoModel, AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.model_name_or_path)
            self._encoder = AutoModel.from_pretrained(self.model_name_or_path).eval()
        return self._tokenizer, self._encoder

    @torch.no_grad()
    def embed(self, prompts, responses) -> np.ndarray:
        tok, enc = self._load()
        out = []
        for i in tqdm(range(0, len(responses), self.batch_size), desc="Embedding", leave=False):
            batch = encode_pairs(
                tok, prompts[i : i + self.batch_size], responses[i : i + self.batch_size], self.max_length
            ).to(enc.device)
            hidden = enc(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).float().cpu().numpy())
        return np.concatenate(out)

    def featurize(self, prompts, responses, fit: bool = False) -> np.ndarray:
        """Frozen embeddings (label-free: cross-fitting computes them once and shares them between folds)."""
        return self.embed(prompts, responses)

    def fit_matrix(self, x, labels) -> EmbeddingClassifier:
        self.model = LogisticRegression(C=self.C, max_iter=2000, random_state=self.seed).fit(x, labels)
        return self

    def scores_matrix(self, x) -> np.ndarray:
        return self.model.predict_proba(x)[:, 1]

    def _fit(self, prompts, responses, labels):
        self.fit_matrix(self.embed(prompts, responses), labels)

    def _scores(self, prompts, responses):
        return self.scores_matrix(self.embed(prompts, responses))

    def _config(self):
        return {
            "model_name_or_path": self.model_name_or_path,
            "C": self.C,
            "max_length": self.max_length,
            "batch_size": self.batch_size,
        }

    def _arrays(self):
        return {
            "coef": self.model.coef_.astype(np.float64),
            "intercept": self.model.intercept_.astype(np.float64),
        }

    @classmethod
    def _restore(cls, path, cfg, arrays):
        clf = cls(
            model_name_or_path=cfg["model_name_or_path"],
            C=cfg["C"],
            max_length=cfg["max_length"],
            batch_size=cfg["batch_size"],
        )
        model = LogisticRegression()
        model.coef_, model.intercept_ = arrays["coef"], arrays["intercept"]
        model.classes_ = np.array([0, 1])
        clf.model = model
        return clf
