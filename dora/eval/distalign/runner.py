"""Stage 3 (model side): prompts -> a local causal LM -> distributions, and ``evaluate``, the whole run.

Log-p reads the next-token probabilities of the option letters; sequence samples N letters (temperature 1,
no top-k / top-p); verbalize samples a JSON-like distribution at temperature 1, as the paper does
(``verbalize_decoding="greedy"`` for deterministic output).
"""

from __future__ import annotations

import itertools

import numpy as np
from tqdm.auto import tqdm

from dora.eval.distalign.data import Item
from dora.eval.distalign.parsing import letter_token_ids, logp_distribution, parse_sequence, parse_verbalized
from dora.eval.distalign.prompts import build_prompt, select_shots
from dora.eval.distalign.scoring import canonical, score_predictions


class ModelRunner:
    """Batched next-token probabilities and generations from a local causal LM (a folder, a Hub id, a LoRA
    adapter folder written by ``dora train``). ``chat_template`` wraps each prompt as a user message. The
    tokenizer and config load at once, the weights on first use: ``check_prompts`` can refuse prompts longer
    than the model's context before any weights load."""

    def __init__(
        self, model_name_or_path: str, batch_size: int = 16, device: str | None = None, chat_template: bool = False
    ):
        import torch
        from transformers import AutoConfig, AutoTokenizer

        self.torch, self.path = torch, model_name_or_path
        self.tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "left"
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size, self.chat_template = batch_size, chat_template
        if chat_template and not self.tokenizer.chat_template:
            raise ValueError(f"--chat-template: the tokenizer of {model_name_or_path!r} has no chat template")
        try:
            config = AutoConfig.from_pretrained(model_name_or_path)
        except (OSError, ValueError):  # a LoRA adapter folder: its base's config, read when the model loads
            config = None
        limits = [getattr(config, k, None) for k in ("max_position_embeddings", "n_positions", "n_ctx")]
        limits.append(self.tokenizer.model_max_length if self.tokenizer.model_max_length < 10**8 else None)
        self.context = min((n for n in limits if isinstance(n, int) and n > 0), default=None)
        self._model = None

    @property
    def model(self):
        if self._model is None:
            from transformers import AutoModelForCausalLM

            dtype = "auto" if self.device.startswith("cuda") else self.torch.float32
            self._model = AutoModelForCausalLM.from_pretrained(self.path, dtype=dtype)
            self._model.to(self.device).eval()
        return self._model

    def check_prompts(self, prompts: list[str], new_tokens: int, names: list[str]) -> None:
        """Refuse a prompt that, with ``new_tokens`` generated after it, is longer than the model's context
        (it would be sent anyway and read past the position table); ``names[i]`` names prompt i."""
        if self.context is None:
            return
        for name, prompt in zip(names, prompts):
            n = len(self._encode([prompt])["input_ids"][0])
            if n + new_tokens > self.context:
                extra = f" + {new_tokens} generated" if new_tokens else ""
                raise ValueError(f"{name}: the prompt is {n} tokens{extra}, longer than the model's context of "
                                 f"{self.context} tokens ({self.path}); use --max-questions, fewer --shots or "
                                 "--prompt-style concise, or a model with a longer context")  # fmt: skip

    def _encode(self, prompts: list[str]):
        if self.chat_template:
            prompts = [
                self.tokenizer.apply_chat_template(
                    [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
                )
                for p in prompts
            ]
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=not self.chat_template)
        return enc.to(self.device) if self._model is not None else enc

    def next_token_probs(self, prompts: list[str]) -> np.ndarray:
        out = []
        for i in tqdm(range(0, len(prompts), self.batch_size), desc="next-token probs", leave=False):
            enc = self._encode(prompts[i : i + self.batch_size])
            positions = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)  # left padding
            with self.torch.no_grad():
                logits = self.model(**enc, position_ids=positions).logits[:, -1].float()
            out.append(self.torch.softmax(logits, -1).cpu().numpy())
        return np.concatenate(out)

    def generate(self, prompts: list[str], max_new_tokens: int, sample: bool, seed: int = 0) -> list[str]:
        """Pure sampling (temperature 1, no top-k / top-p) when ``sample``, else greedy."""
        self.torch.manual_seed(seed)
        kw = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0) if sample else dict(do_sample=False)
        texts = []
        for i in tqdm(range(0, len(prompts), self.batch_size), desc="generating", leave=False):
            enc = self._encode(prompts[i : i + self.batch_size])
            with self.torch.no_grad():
                gen = self.model.generate(
                    **enc, max_new_tokens=max_new_tokens, pad_token_id=self.tokenizer.pad_token_id, **kw
                )
            texts += self.tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        return texts


def _prompts(items, method, steering, shots, samples, seed, style) -> list[str]:
    return [
        build_prompt(it, method, steering, shots.get(i, []), samples, seed + i, style) for i, it in enumerate(items)
    ]


def new_tokens(method: str, items: list[Item], samples: int) -> int:
    """Tokens generated after each prompt: none for log-p, 3N + 8 for N sampled letters, 16 + 12 per option for a
    verbalized distribution."""
    if method == "logprobs":
        return 0
    return 3 * samples + 8 if method == "sequence" else 16 + 12 * max(len(it.options) for it in items)


def predict(
    runner,
    items: list[Item],
    method: str,
    steering: str,
    *,
    samples: int = 30,
    seed: int = 0,
    shots: dict[int, list[Item]] | None = None,
    style: str = "reference",
    verbalize_decoding: str = "sample",
) -> list[dict]:
    """One prediction per item: ``{"item", "method", "steering", "prediction" (None when unreadable),
    "mass", "failure", "text"}``; log-p rows also carry ``off_option_mass``. ``mass``: the share of the output
    on the options before renormalising (the letters' probability, the valid share of a sequence; 1 for a
    verbalized answer). ``failure``: the mass off the options
    (log-p), the share of answers that are not an option letter (sequence), 1.0 for an unreadable
    verbalized answer."""
    method, steering = canonical("method", method), canonical("steering", steering)
    prompts = _prompts(items, method, steering, shots or {}, samples, seed, style)
    rows = [{"item": i, "method": method, "steering": steering} for i in range(len(items))]
    if method == "logprobs":
        probs = runner.next_token_probs(prompts)
        cache: dict[int, list[list[int]]] = {}
        for row, it, p in zip(rows, items, probs):
            ids = cache.setdefault(len(it.options), letter_token_ids(runner.tokenizer, len(it.options)))
            d, off = logp_distribution(p, ids)
            row.update(prediction=d, mass=1.0 - off, failure=off, off_option_mass=off, text=None)
        return rows
    if method == "sequence":
        texts = runner.generate(prompts, max_new_tokens=new_tokens(method, items, samples), sample=True, seed=seed)
        for row, it, t in zip(rows, items, texts):
            d, f = parse_sequence(t, len(it.options), samples)
            row.update(prediction=d, mass=1.0 - f, failure=f, text=t)
        return rows
    texts = runner.generate(
        prompts, max_new_tokens=new_tokens(method, items, samples), sample=verbalize_decoding == "sample", seed=seed
    )
    for row, it, t in zip(rows, items, texts):
        d = parse_verbalized(t, it.options)
        row.update(prediction=d, failure=0.0 if d is not None else 1.0, text=t)
    return rows


def evaluate(
    runner,
    items: list[Item],
    *,
    methods=("logprobs", "sequence", "verbalize"),
    steerings=("none", "persona", "few_shot"),
    samples: int = 30,
    seed: int = 0,
    bootstrap: int = 1000,
    k_shots: int = 5,
    shot_pool: list[Item] = (),
    style: str = "reference",
    verbalize_decoding: str = "sample",
    failed: str = "zero",
    renormalize: bool = True,
) -> tuple[dict, list[dict]]:
    """Every (method, steering) on every item, scored as the paper scores them (``score_predictions``).
    Returns (report, per-row predictions and scores)."""
    methods = [canonical("method", m) for m in methods]
    steerings = [canonical("steering", s) for s in steerings]
    if not methods or not steerings:
        raise ValueError("give at least one method and one steering")
    if not items:
        raise ValueError("no benchmark items to evaluate")
    shots, shot_source = select_shots(items, k_shots, shot_pool) if "few_shot" in steerings else ({}, "none")
    if hasattr(runner, "check_prompts"):  # every prompt fits the context, before the first forward pass
        for steering, method in itertools.product(steerings, methods):
            names = [f"{it.context.get('path', it.dataset)}: question {it.qid!r}, group {it.group!r}, "
                     f"{method}/{steering}" for it in items]  # fmt: skip
            prompts = _prompts(items, method, steering, shots, samples, seed, style)
            runner.check_prompts(prompts, new_tokens(method, items, samples), names)
    preds = []
    for steering, method in tqdm(list(itertools.product(steerings, methods)), desc="distalign"):
        preds += predict(runner, items, method, steering, samples=samples, seed=seed, shots=shots, style=style,
                         verbalize_decoding=verbalize_decoding)  # fmt: skip
    report, rows = score_predictions(
        items, preds, failed=failed, renormalize=renormalize, samples=samples, bootstrap=bootstrap, seed=seed
    )
    report.update(prompt_style=style, shots=shot_source, verbalize_decoding=verbalize_decoding)
    return report, rows
