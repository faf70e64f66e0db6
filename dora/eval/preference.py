"""Preference evaluation on a held-out split: implicit-reward accuracy and margins of a policy against its
reference (DPO's implicit reward r = beta * (log pi - log pi_ref), Rafailov et al. 2023 Eq. 5; or SimPO's
reference-free beta * log pi / |y|), reward-model accuracy, and the win rate of the policy's generations
against the reference policy's, judged by a reward model, with bootstrap 95% intervals (the form the DoRA
paper, arXiv 2504.05831, reports).

"Overall" numbers are over the target rows (``target_sources``, by default the human rows); ``by_source``
breaks every row of the split down by its source.
"""

from __future__ import annotations

import json
import logging
import math
import os

import numpy as np
import torch
from tqdm.auto import tqdm

from dora.data import PreferenceCollator, add_implicit_prompt, is_listwise, prepare_dataset
from dora.eval.metrics import bootstrap_ci
from dora.logprobs import add_logprob_head, completion_logps
from dora.losses import implicit_rewards

logger = logging.getLogger(__name__)

__all__ = [
    "default_reference",
    "load_causal_lm",
    "sequence_logps",
    "implicit_reward_accuracy",
    "RewardModel",
    "reward_model_accuracy",
    "generate",
    "win_rate_from_scores",
    "win_rate",
]


# the evaluation settings' rules, written once: name -> (minimum, minimum excluded, maximum); NaN and inf refused
SETTINGS = {"beta": (0, True, None), "bootstrap": (0, False, None), "tie_margin": (0, False, None),
            "batch_size": (1, False, None), "max_length": (2, False, None), "max_new_tokens": (1, False, None),
            "temperature": (0, True, None), "top_p": (0, True, 1)}  # fmt: skip


def check_settings(flags: bool = False, **settings) -> None:
    """One line for a setting out of range (a NaN beta scored every pair wrong); ``flags``: named as the
    command line's flags (``dora eval preference`` checks them before any model loads)."""
    for name, value in settings.items():
        if value is None:
            continue
        low, strict, high = SETTINGS[name]
        label = "--" + name.replace("_", "-") if flags else name
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{label} must be a finite number, got {value!r}")
        if (value <= low) if strict else (value < low):
            raise ValueError(f"{label} must be {'>' if strict else '>='} {low}, got {value}")
        if high is not None and value > high:
            raise ValueError(f"{label} must be <= {high}, got {value}")


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_reference(model_path: str) -> str | None:
    """The base model of a LoRA adapter folder (what ``dora train`` with LoRA writes), else None."""
    config = os.path.join(model_path, "adapter_config.json")
    if os.path.isfile(config):
        with open(config) as f:
            return json.load(f).get("base_model_name_or_path")
    return None


def load_causal_lm(path_or_model, device: str | None = None):
    """A causal LM in eval mode on ``device`` (a folder, a Hub id, a LoRA adapter folder, or a model)."""
    from transformers import AutoModelForCausalLM

    device = device or _device()
    if isinstance(path_or_model, str):
        dtype = "auto" if device.startswith("cuda") else torch.float32
        path_or_model = AutoModelForCausalLM.from_pretrained(path_or_model, dtype=dtype)
    return path_or_model.to(device).eval()


def _summary(correct: np.ndarray, margins: np.ndarray, chosen: np.ndarray, rejected: np.ndarray, **boot) -> dict:
    return {
        "n": int(len(correct)),
        "accuracy": float(correct.mean()) if len(correct) else float("nan"),
        "accuracy_ci95": bootstrap_ci(correct, **boot),
        "margin": float(margins.mean()) if len(margins) else float("nan"),
        "margin_ci95": bootstrap_ci(margins, **boot),
        "chosen": float(chosen.mean()) if len(chosen) else float("nan"),
        "rejected": float(rejected.mean()) if len(rejected) else float("nan"),
    }


def _report(chosen, rejected, sources, target_sources, *, bootstrap: int, seed: int) -> dict:
    """Accuracy (chosen scored above rejected) and margins over the target rows, and per source."""
    chosen, rejected = np.asarray(chosen, np.float64), np.asarray(rejected, np.float64)
    sources = np.asarray(sources, dtype=object)
    correct, margins = (chosen > rejected).astype(np.float64), chosen - rejected
    boot = dict(samples=bootstrap, seed=seed)
    target = np.isin(sources, list(target_sources)) if target_sources else np.ones(len(chosen), bool)
    out = _summary(correct[target], margins[target], chosen[target], rejected[target], **boot)
    out["target_sources"] = sorted(target_sources) if target_sources else "all"
    out["by_source"] = {
        str(s): _summary(
            correct[sources == s], margins[sources == s], chosen[sources == s], rejected[sources == s], **boot
        )
        for s in sorted(set(sources.tolist()))
    }
    return out


def _check_targets(sources: list[str], target_sources: list[str] | None, source_column: str) -> list[str] | None:
    if not target_sources:
        return None
    if not any(sources):
        logger.warning("no '%s' column: every row counts as a target row", source_column)
        return None
    if not set(sources) & set(target_sources):
        raise ValueError(f"no row has {source_column} in {sorted(target_sources)}; sources: {sorted(set(sources))}")
    return list(target_sources)


@torch.no_grad()
def sequence_logps(model, prepared, pad_token_id: int, *, batch_size: int = 16, max_length: int | None = None):
    """Summed completion log-probs and completion lengths, each [rows, 2] (chosen, rejected), of rows
    tokenised by ``dora.data.prepare_dataset`` (the trainer's tokenisation and completion mask)."""
    model = add_logprob_head(model)
    collate = PreferenceCollator(pad_token_id, max_length)
    logps, lengths = [], []
    for i in tqdm(range(0, len(prepared), batch_size), desc="log-probs", leave=False):
        batch = collate([prepared[j] for j in range(i, min(i + batch_size, len(prepared)))])
        b = batch["weight"].shape[0]
        device = next(model.parameters()).device
        lp, n = completion_logps(
            model,
            batch["input_ids"].to(device),
            batch["attention_mask"].to(device),
            batch["completion_mask"].to(device),
        )
        logps.append(lp.float().view(-1, b).T.cpu())  # response-major [2B] -> [B, 2]
        lengths.append(n.float().view(-1, b).T.cpu())
    return torch.cat(logps), torch.cat(lengths)


def _prepare(dataset, tokenizer, source_column: str, max_length: int | None):
    dataset = add_implicit_prompt(dataset)
    if is_listwise(dataset.column_names):
        raise ValueError("preference evaluation needs pairwise rows (prompt, chosen, rejected)")
    if "dora_weight" not in dataset.column_names:  # weights play no part in evaluation: no warning about them
        dataset = dataset.add_column("dora_weight", [1.0] * len(dataset))
    return prepare_dataset(dataset, tokenizer, source_column=source_column, max_length=max_length, desc="eval")


def implicit_reward_accuracy(
    policy,
    reference,
    tokenizer,
    dataset,
    *,
    beta: float = 0.1,
    target_sources: list[str] | None = ("human",),
    source_column: str = "source",
    batch_size: int = 16,
    max_length: int | None = 1024,
    bootstrap: int = 1000,
    seed: int = 0,
) -> dict:
    """Share of pairs whose chosen response gets the higher implicit reward, and the mean margin
    r(chosen) - r(rejected), over the target rows and per source. ``reference=None`` gives SimPO's
    reference-free reward beta * log pi / |y|. Models are folders, Hub ids or loaded models."""
    check_settings(beta=beta, batch_size=batch_size, max_length=max_length, bootstrap=bootstrap)
    prepared = _prepare(dataset, tokenizer, source_column, max_length)
    sources = [str(s) for s in prepared["source"]]
    targets = _check_targets(sources, target_sources, source_column)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    logps, lengths = sequence_logps(load_causal_lm(policy), prepared, pad, batch_size=batch_size, max_length=max_length)
    ref = None
    if reference is not None:
        ref, _ = sequence_logps(load_causal_lm(reference), prepared, pad, batch_size=batch_size, max_length=max_length)
    rewards = implicit_rewards(logps, ref, lengths=lengths, beta=beta).double().numpy()
    out = _report(rewards[:, 0], rewards[:, 1], sources, targets, bootstrap=bootstrap, seed=seed)
    out["reward"] = "beta * (logp - ref)" if reference is not None else "beta * logp / |y|"
    out["beta"] = beta
    return out


def _conversation(prompt, response=None):
    """Chat messages for a prompt (a message list or a string) and an optional assistant response."""
    messages = list(prompt) if isinstance(prompt, list) else [{"role": "user", "content": str(prompt)}]
    if response is not None:
        content = response[-1]["content"] if isinstance(response, list) else str(response)
        messages.append({"role": "assistant", "content": content})
    return messages


def _response_text(response) -> str:
    return response[-1]["content"] if isinstance(response, list) else str(response)


class RewardModel:
    """A reward model loaded with ``AutoModelForSequenceClassification`` (a folder or a Hub id). The score
    of (prompt, response) is its logit when it has one label, logit 1 - logit 0 when it has two. Chat
    prompts go through the reward model's chat template; text is scored as prompt + response."""

    def __init__(self, path: str, batch_size: int = 16, max_length: int = 1024, device: str | None = None):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.truncation_side = "left"  # keep the response when a prompt is long
        device = device or _device()
        dtype = "auto" if device.startswith("cuda") else torch.float32
        self.model = AutoModelForSequenceClassification.from_pretrained(path, dtype=dtype).to(device).eval()
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        if self.model.config.num_labels not in (1, 2):
            raise ValueError(f"{path}: a reward model has 1 or 2 labels, this one has {self.model.config.num_labels}")
        self.batch_size, self.max_length = batch_size, max_length

    def _text(self, prompt, response) -> str:
        if isinstance(prompt, list) and getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(_conversation(prompt, response), tokenize=False)
        if isinstance(prompt, list):
            prompt = "\n".join(str(m["content"]) for m in prompt) + "\n"
        return str(prompt) + _response_text(response)

    @torch.no_grad()
    def score(self, prompts: list, responses: list) -> np.ndarray:
        out = []
        for i in tqdm(range(0, len(prompts), self.batch_size), desc="reward model", leave=False):
            texts = [
                self._text(p, r) for p, r in zip(prompts[i : i + self.batch_size], responses[i : i + self.batch_size])
            ]
            enc = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=self.max_length)
            logits = self.model(**enc.to(self.model.device)).logits.float()
            out.append((logits[:, 0] if logits.shape[-1] == 1 else logits[:, 1] - logits[:, 0]).cpu().numpy())
        return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def reward_model_accuracy(
    reward_model: RewardModel,
    dataset,
    *,
    target_sources: list[str] | None = ("human",),
    source_column: str = "source",
    bootstrap: int = 1000,
    seed: int = 0,
) -> dict:
    """Share of pairs whose chosen response the reward model scores above the rejected one (and the mean
    score margin), over the target rows and per source."""
    check_settings(bootstrap=bootstrap)
    dataset = add_implicit_prompt(dataset)
    for c in ("prompt", "chosen", "rejected"):
        if c not in dataset.column_names:
            raise ValueError(f"missing column '{c}'; the dataset has {sorted(dataset.column_names)}")
    sources = (
        [str(s) if s is not None else "" for s in dataset[source_column]]
        if source_column in dataset.column_names
        else [""] * len(dataset)
    )
    targets = _check_targets(sources, target_sources, source_column)
    prompts = list(dataset["prompt"])
    chosen = reward_model.score(prompts, list(dataset["chosen"]))
    rejected = reward_model.score(prompts, list(dataset["rejected"]))
    return _report(chosen, rejected, sources, targets, bootstrap=bootstrap, seed=seed)


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list,
    *,
    batch_size: int = 16,
    max_new_tokens: int = 128,
    do_sample: bool = True,
    temperature: float = 0.7,
    top_p: float = 0.9,
    seed: int = 0,
    num_return_sequences: int = 1,
) -> list[str]:
    """Batched (left-padded) generation in eval mode; chat prompts go through the tokenizer's chat template.
    ``num_return_sequences`` > 1 (sampling): that many responses per prompt, prompt-major in one flat list."""
    torch.manual_seed(seed)
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    kw = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0) if do_sample else dict(do_sample=False)
    if num_return_sequences > 1:
        kw["num_return_sequences"] = num_return_sequences
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    was_training = model.training
    model.eval()
    out = []
    try:
        for i in tqdm(range(0, len(prompts), batch_size), desc="generating", leave=False):
            chunk = prompts[i : i + batch_size]
            chat = isinstance(chunk[0], list)
            texts = [
                tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) if chat else str(p)
                for p in chunk
            ]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not chat).to(device)
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=pad, **kw)
            out += tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return out


def win_rate_from_scores(
    policy_scores, reference_scores, *, tie_margin: float = 0.0, bootstrap: int = 1000, seed: int = 0
) -> dict:
    """Win / tie / lose shares of the policy against the reference (a tie: scores within ``tie_margin``),
    the win rate counting a tie as half a win, and percentile bootstrap 95% intervals over prompts: each of
    ``bootstrap`` resamples draws ``rng.integers(0, n, n)`` with ``rng = np.random.default_rng(seed)``."""
    check_settings(tie_margin=tie_margin, bootstrap=bootstrap)
    d = np.asarray(policy_scores, dtype=np.float64) - np.asarray(reference_scores, dtype=np.float64)
    if d.ndim != 1 or len(d) == 0:
        raise ValueError("win rate: need one policy and one reference score per prompt")
    if not np.isfinite(d).all():
        raise ValueError(f"win rate: prompt {int(np.flatnonzero(~np.isfinite(d))[0]) + 1} has a NaN or infinite score")
    outcome = np.stack([d > tie_margin, np.abs(d) <= tie_margin, d < -tie_margin], axis=1).astype(np.float64)
    rng = np.random.default_rng(seed)
    boots = (
        np.stack([outcome[rng.integers(0, len(d), len(d))].mean(0) for _ in range(bootstrap)]) if bootstrap else None
    )
    out = {"n": int(len(d))}
    shares = {"win": outcome[:, 0], "tie": outcome[:, 1], "lose": outcome[:, 2]}
    shares["win_rate"] = outcome[:, 0] + 0.5 * outcome[:, 1]
    for k, (name, x) in enumerate(shares.items()):
        out[name] = float(x.mean())
        if boots is None:
            out[f"{name}_ci95"] = (float("nan"), float("nan"))
            continue
        b = boots[:, k] if k < 3 else boots[:, 0] + 0.5 * boots[:, 1]
        lo, hi = np.quantile(b, [0.025, 0.975])
        out[f"{name}_ci95"] = (float(lo), float(hi))
    out["mean_score_difference"] = float(d.mean())
    return out


def win_rate(
    policy,
    reference,
    tokenizer,
    reward_model: RewardModel,
    prompts: list,
    *,
    tie_margin: float = 0.0,
    bootstrap: int = 1000,
    seed: int = 0,
    examples: int = 5,
    **gen_kwargs,
) -> dict:
    """Generate for every prompt with the policy and with the reference (same sampling settings and seed),
    score both with the reward model, and count the policy's wins, ties and losses."""
    check_settings(tie_margin=tie_margin, bootstrap=bootstrap,
                   **{k: v for k, v in gen_kwargs.items() if k in SETTINGS})  # fmt: skip
    ours = generate(load_causal_lm(policy), tokenizer, prompts, seed=seed, **gen_kwargs)
    theirs = generate(load_causal_lm(reference), tokenizer, prompts, seed=seed, **gen_kwargs)
    ours_score, theirs_score = reward_model.score(prompts, ours), reward_model.score(prompts, theirs)
    result = win_rate_from_scores(ours_score, theirs_score, tie_margin=tie_margin, bootstrap=bootstrap, seed=seed)
    result["examples"] = [
        {"prompt": p, "policy": a, "reference": b, "policy_score": float(x), "reference_score": float(y)}
        for p, a, b, x, y in list(zip(prompts, ours, theirs, ours_score, theirs_score))[:examples]
    ]
    return result
