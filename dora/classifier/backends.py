"""The classifier backends by name: a new backend is one ``SourceClassifier`` subclass and one line here."""

from __future__ import annotations

from dora.classifier.base import SourceClassifier, read_config
from dora.classifier.embedding import EmbeddingClassifier
from dora.classifier.tfidf import TfidfClassifier
from dora.classifier.transformer import TransformerClassifier

__all__ = ["BACKENDS", "make_classifier", "load_classifier"]

BACKENDS: dict[str, type[SourceClassifier]] = {
    "tfidf": TfidfClassifier,  # the default: seconds on a CPU
    "embedding": EmbeddingClassifier,  # a frozen encoder + logistic regression
    "transformer": TransformerClassifier,  # a fine-tuned sequence classifier (the paper's BERT)
}


def make_classifier(backend: str = "tfidf", **kwargs) -> SourceClassifier:
    """An unfitted classifier of ``backend`` (a name in ``BACKENDS``) with the backend's keyword arguments."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {sorted(BACKENDS)}")
    return BACKENDS[backend](**kwargs)


def load_classifier(path: str) -> SourceClassifier:
    """A classifier saved with ``save_pretrained`` (safetensors + JSON), of whichever backend it names."""
    backend = read_config(path).get("backend")
    if backend not in BACKENDS:
        raise ValueError(f"{path}: unknown classifier backend {backend!r}")
    return BACKENDS[backend].from_pretrained(path)
