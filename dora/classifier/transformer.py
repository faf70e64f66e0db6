"""Fine-tunes an ``AutoModelForSequenceClassification`` (a BERT-base binary classifier, as in the DoRA paper)
on (prompt, response) pairs with the transformers Trainer; runs under ``accelerate launch`` like the rest."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import torch
from tqdm.auto import tqdm

from dora.classifier.base import SourceClassifier
from dora.classifier.embedding import encode_pairs


class _PairDataset(torch.utils.data.Dataset):
    def __init__(self, tokenizer, prompts, responses, labels, max_length):
        self.enc = tokenizer(prompts, responses, truncation=True, max_length=max_length)
        self.labels = labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {**{k: v[i] for k, v in self.enc.items()}, "labels": int(self.labels[i])}


class TransformerClassifier(SourceClassifier):
    backend = "transformer"

    def __init__(
        self,
        calibration: str = "platt",
        seed: int = 0,
        model_name_or_path: str | None = None,
        epochs: float = 1.0,
        learning_rate: float = 2e-5,
        batch_size: int = 16,
        max_length: int = 256,
    ):
        super().__init__(calibration, seed)
        if model_name_or_path is None:
            raise ValueError("the transformer backend needs a model (--model, e.g. bert-base-uncased)")
        self.model_name_or_path, self.epochs, self.learning_rate = model_name_or_path, epochs, learning_rate
        self.batch_size, self.max_length = batch_size, max_length
        self.model = None
        self.tokenizer = None

    def _fit(self, prompts, responses, labels):
        # transformers' Trainer costs seconds to import; the default tfidf backend never needs it
        from transformers import (
            AutoModelForSequenceClassification,
            AutoTokenizer,
            DataCollatorWithPadding,
            Trainer,
            TrainingArguments,
        )

        self.tokenizer = AutoTokenizer.from_pretrained(self.model_name_or_path)
        self.model = AutoModelForSequenceClassification.from_pretrained(self.model_name_or_path, num_labels=2)
        with tempfile.TemporaryDirectory() as out:
            args = TrainingArguments(
                output_dir=out,
                num_train_epochs=self.epochs,
                learning_rate=self.learning_rate,
                per_device_train_batch_size=self.batch_size,
                save_strategy="no",
                report_to=[],
                seed=self.seed,
                logging_steps=50,
                disable_tqdm=False,
                dataloader_pin_memory=torch.accelerator.is_available(),  # no pinned memory without an accelerator
            )
            Trainer(
                model=self.model,
                args=args,
                data_collator=DataCollatorWithPadding(self.tokenizer),
                train_dataset=_PairDataset(self.tokenizer, prompts, responses, labels, self.max_length),
            ).train()
        self.model.eval()

    @torch.no_grad()
    def _scores(self, prompts, responses):
        out = []
        device = next(self.model.parameters()).device
        for i in tqdm(range(0, len(responses), 64), desc="Scoring", leave=False):
            batch = encode_pairs(self.tokenizer, prompts[i : i + 64], responses[i : i + 64], self.max_length)
            logits = self.model(**batch.to(device)).logits.float()
            out.append(torch.softmax(logits, -1)[:, 1].cpu().numpy())
        return np.concatenate(out)

    def _config(self):
        return {
            "model_name_or_path": self.model_name_or_path,
            "epochs": self.epochs,
            "learning_rate": self.learning_rate,
            "batch_size": self.batch_size,
            "max_length": self.max_length,
        }

    def _save_extra(self, path):
        self.model.save_pretrained(os.path.join(path, "model"))
        self.tokenizer.save_pretrained(os.path.join(path, "model"))

    @classmethod
    def _restore(cls, path, cfg, arrays):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        clf = cls(
            **{
                k: cfg[k]
                for k in ("model_name_or_path", "epochs", "learning_rate", "batch_size", "max_length")
            }
        )
        clf.model = AutoModelForSequenceClassification.from_pretrained(os.path.join(path, "model")).eval()
        clf.tokenizer = AutoTokenizer.from_pretrained(os.path.join(path, "model"))
        return clf
