"""Source classifiers: P(target | prompt, response), and the DoRA weights they give.

Backends: ``tfidf`` (default), ``embedding`` (frozen encoder + logistic regression), ``transformer``
(fine-tuned sequence classifier). ``annotate`` runs the whole step on a dataset with source labels;
``annotate_density_ratio`` on one without, from a trusted sample of the target.
"""

from dora.classifier.annotate import annotate, extract_responses
from dora.classifier.backends import BACKENDS, load_classifier, make_classifier
from dora.classifier.base import Calibrator, SourceClassifier
from dora.classifier.density import annotate_density_ratio, estimate_target_share
from dora.classifier.embedding import EmbeddingClassifier
from dora.classifier.tfidf import TfidfClassifier
from dora.classifier.transformer import TransformerClassifier

__all__ = [
    "annotate",
    "annotate_density_ratio",
    "estimate_target_share",
    "extract_responses",
    "make_classifier",
    "BACKENDS",
    "load_classifier",
    "Calibrator",
    "SourceClassifier",
    "TfidfClassifier",
    "EmbeddingClassifier",
    "TransformerClassifier",
]
