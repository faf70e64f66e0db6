"""Preference evaluation on a held-out split: implicit-reward accuracy and margins of a policy against its
reference (overall and per source), reward-model accuracy, and the win rate against the reference policy
judged by a reward model, with bootstrap 95% intervals (the form the DoRA paper reports)."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from dora.data import PreferenceCollator, prepare_dataset
from dora.eval.metrics import bootstrap_ci
from dora.logprobs import add_logprob_head, completion_logps

__all__ = ["select_target_rows", "implicit_reward_accuracy", "reward_model_accuracy", "win_rate"]


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def select_target_rows(dataset, target_sources: list[str] | None, source_column: str = "source"):
    """The rows of the target sources (all rows when none are given or the column is absent)."""
    if not target_sources or source_column not in dataset.column_names:
        return dataset
    keep = set(target_sources)
    out = dataset.filter(lambda r: r[source_column] in keep)
    if len(out) == 0:
        raise ValueError(f"no rows with {source_column} in {sorted(keep)}")
    return out


def _load_lm(path_or_model):
    from transformers import AutoModelForCausalLM

    model = (
        AutoModelForCausalLM.from_pretrained(path_or_model)
        if isinstance(path_or_model, str)
        else path_or_model
    )
    return add_logprob_head(model.to(_device()).eval())


@torch.no_grad()
def sequence_logps(model, tokenizer, dataset, *, batch_size: int = 16, max_length: int | None = 1024):
    """Summed completion log-probs [rows, n] of every response, in the trainer's tokenisation."""
    prepared = prepare_dataset(dataset, tokenizer, max_length=max_length, desc="eval")
    collate = PreferenceCollator(tokenizer.pad_token_id, max_length)
    out = []
    for i in tqdm(range(0, len(prepared), batch_size), desc="Log-probs", leave=False):
        batch = collate([prepared[j] for j in range(i, min(i + batch_size, len(prepared)))])
        b = batch["weights"].shape[0]
        lp, _ = completion_logps(
            model,
            batch["input_ids"].to(model.device),
            batch["attention_mask"].to(model.device),
            batch["completion_mask"].to(model.device),
        )
        out.append(lp.view(-1, b).T.float().cpu())
    return torch.cat(out).numpy(), prepared


def implicit_reward_accuracy(
    policy,
    reference,
    tokenizer,
    dataset,
    *,
    beta: float = 0.1,
    batch_size: int = 16,
    source_column: str = "source",
    bootstrap: int = 1000,
    seed: int = 0,
) -> dict:
    """Accuracy (reward of chosen > rejected) and mean margin of r = beta (log pi - log pi_ref)."""
    policy, reference = _load_lm(policy), _load_lm(reference)
    lp, prepared = sequence_logps(policy, tokenizer, dataset, batch_size=batch_size)
    ref, _ = sequence_logps(reference, tokenizer, dataset, batch_size=batch_size)
    rewards = beta * (lp - ref)
    correct = (rewards[:, 0] > rewards[:, 1]).astype(np.float64)
    margins = rewards[:, 0] - rewards[:, 1]
    out = {
        "n": int(len(correct)),
        "accuracy": float(correct.mean()),
        "accuracy_ci95": bootstrap_ci(correct, samples=bootstrap, seed=seed),
        "margin": float(margins.mean()),
    }
    if source_column in dataset.column_names:
        sources = np.array([str(s) for s in prepared["source"]])
        out["by_source"] = {
            s: {
                "n": int((sources == s).sum()),
                "accuracy": float(correct[sources == s].mean()),
                "margin": float(margins[sources == s].mean()),
            }
            for s in sorted(set(sources))
        }
    return out


class RewardModel:
    """A sequence-classification reward model: score(prompt, response) is its first logit."""

    def __init__(self, path: str, batch_size: int = 16, max_length: int = 1024):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForSequenceClassification.from_pretrained(path).to(_device()).eval()
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.batch_size, self.max_length = batch_size, max_length

    @torch.no_grad()
    def score(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        out = []
        for i in range(0, len(prompts), self.batch_size):
            texts = [
                p + r for p, r in zip(prompts[i : i + self.batch_size], responses[i : i + self.batch_size])
            ]
            enc = self.tokenizer(
                texts, return_tensors="pt", padding=True, truncation=True, max_length=self.max_length
            ).to(self.model.device)
            out.append(self.model(**enc).logits[:, 0].float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)


def reward_model_accuracy(
    reward_model: RewardModel, dataset, *, bootstrap: int = 1000, seed: int = 0
) -> dict:
    """Share of pairs whose chosen response the reward model scores above the rejected one."""
    prompts = [str(p) for p in dataset["prompt"]]
    chosen = reward_model.score(prompts, [str(c) for c in dataset["chosen"]])
    rejected = reward_model.score(prompts, [str(r) for r in dataset["rejected"]])
    correct = (chosen > rejected).astype(np.float64)
    return {
        "n": int(len(correct)),
        "accuracy": float(correct.mean()),
        "accuracy_ci95": bootstrap_ci(correct, samples=bootstrap, seed=seed),
        "margin": float((chosen - rejected).mean()),
    }


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[str],
    *,
    batch_size: int = 16,
    max_new_tokens: int = 128,
    do_sample: bool = True,
    temperature: float = 0.7,
    top_p: float = 0.9,
    seed: int = 0,
) -> list[str]:
    torch.manual_seed(seed)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    out = []
    for i in tqdm(range(0, len(prompts), batch_size), desc="Generating", leave=False):
        enc = tokenizer(prompts[i : i + batch_size], return_tensors="pt", padding=True).to(model.device)
        kw = (
            dict(do_sample=True, temperature=temperature, top_p=top_p) if do_sample else dict(do_sample=False)
        )
        gen = model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, **kw)
        out += tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    tokenizer.padding_side = side
    return out


def win_rate_from_scores(
    policy_scores, reference_scores, *, tie_margin: float = 0.0, bootstrap: int = 1000, seed: int = 0
) -> dict:
    """Win / tie / lose shares of the policy against the reference, with bootstrap 95% intervals."""
    d = np.asarray(policy_scores, dtype=np.float64) - np.asarray(reference_scores, dtype=np.float64)
    win, tie, lose = (
        (d > tie_margin).astype(float),
        (np.abs(d) <= tie_margin).astype(float),
        (d < -tie_margin),
    )
    lose = lose.astype(float)
    return {
        "n": int(len(d)),
        "win": float(win.mean()),
        "tie": float(tie.mean()),
        "lose": float(lose.mean()),
        "win_ci95": bootstrap_ci(win, samples=bootstrap, seed=seed),
        "lose_ci95": bootstrap_ci(lose, samples=bootstrap, seed=seed),
    }


def win_rate(
    policy,
    reference,
    tokenizer,
    reward_model: RewardModel,
    prompts: list[str],
    *,
    tie_margin: float = 0.0,
    bootstrap: int = 1000,
    seed: int = 0,
    **gen_kwargs,
) -> dict:
    """Generate with the policy and the reference, score both with the reward model, count wins."""
    from transformers import AutoModelForCausalLM

    def load(m):
        return (AutoModelForCausalLM.from_pretrained(m) if isinstance(m, str) else m).to(_device()).eval()

    ours = generate(load(policy), tokenizer, prompts, seed=seed, **gen_kwargs)
    theirs = generate(load(reference), tokenizer, prompts, seed=seed, **gen_kwargs)
    result = win_rate_from_scores(
        reward_model.score(prompts, ours),
        reward_model.score(prompts, theirs),
        tie_margin=tie_margin,
        bootstrap=bootstrap,
        seed=seed,
    )
    result["examples"] = [
        {"prompt": p, "policy": a, "reference": b} for p, a, b in list(zip(prompts, ours, theirs))[:5]
    ]
    return result
