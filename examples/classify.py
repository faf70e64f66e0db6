"""Stage 1: score a mixed dataset with the source classifier and write DoRA weights (dQ0/dP per row).

    python examples/classify.py mix.jsonl human classified/
"""

import sys

from datasets import load_dataset

from dora.classifier import annotate

path, target, out = sys.argv[1], sys.argv[2], sys.argv[3]
mix = load_dataset("json", data_files=path, split="train")
# target share and class imbalance come from the file; pass target_share=... if you train on another mix
classified, report = annotate(mix, target_sources=target.split(","), backend="tfidf", folds=5, output_dir=out)
classified.to_json(f"{out}/data.jsonl", lines=True)
print(f"ROC-AUC {report['roc_auc']:.3f}, ECE {report['ece']:.3f} (out of fold), "
      f"effective sample size {report['ess']:.0f} of {report['n_rows']}")
print(f"mean weight {report['weight_mean']:.3f}; by source:", report["mean_weight_by_source"])
