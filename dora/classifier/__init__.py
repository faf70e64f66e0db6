"""Source classifiers: P(target | prompt, response), and the DoRA weights they give.

Backends: ``tfidf`` (default), ``embedding`` (frozen encoder + logistic regression), ``transformer``
(fine-tuned sequence classifier). ``annotate`` runs the whole step on a dataset.
"""

from dora.classifier.annotate import annotate, extract_responses, make_classifier
from dora.classifier.base import Calibrator, SourceClassifier, load_classifier
from dora.classifier.embedding import EmbeddingClassifier
from dora.classifier.tfidf import TfidfClassifier
from dora.classifier.transformer import TransformerClassifier

__all__ = [
    "annotate",
    "extract_responses",
    "make_classifier",
    "load_classifier",
    "Calibrator",
    "SourceClassifier",
    "TfidfClassifier",
    "EmbeddingClassifier",
    "TransformerClassifier",
]
