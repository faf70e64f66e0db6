"""Step (1) of a round: k sampled responses per prompt from the current policy.

Batched Hugging Face ``generate`` (left padding; chat prompts through the tokenizer's chat template), or vLLM
when ``backend="vllm"`` and it is installed. Under ``accelerate launch`` each process samples its shard of
the prompts (every ``world``-th prompt from its rank on) and the shards are gathered back in prompt order.
"""

from __future__ import annotations

import os

import torch
from accelerate import PartialState
from accelerate.utils import gather_object

from dora.eval.preference import generate

__all__ = ["shard_indices", "unshard", "sample_responses", "sample_responses_distributed", "process_state"]


def process_state():
    """accelerate's ``PartialState``; several processes on a machine with no accelerator join with gloo
    (as ``DoRAConfig`` does), not as independent single processes."""
    cpu = not torch.accelerator.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    return PartialState(cpu=True) if cpu else PartialState()


def shard_indices(n: int, rank: int, world: int) -> list[int]:
    """The prompt indices process ``rank`` of ``world`` samples: rank, rank + world, ..."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} of world {world}")
    return list(range(rank, n, world))


def unshard(parts: list[list], n: int) -> list:
    """Inverse of ``shard_indices``: ``parts[rank][j]`` belongs to prompt ``rank + j * world``."""
    world = len(parts)
    out: list = [None] * n
    for rank, part in enumerate(parts):
        idx = shard_indices(n, rank, world)
        if len(part) != len(idx):
            raise ValueError(f"rank {rank} returned {len(part)} results for {len(idx)} prompts")
        for i, x in zip(idx, part):
            out[i] = x
    return out


def sample_responses(
    model,
    tokenizer,
    prompts: list,
    k: int,
    *,
    max_new_tokens: int = 128,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 32,
    seed: int = 0,
    backend: str = "hf",
    greedy: bool = False,
) -> list[list[str]]:
    """``k`` sampled responses for each prompt, ``[len(prompts)][k]`` strings (``greedy``: k = 1 greedy)."""
    if not prompts:
        return []
    if backend == "vllm":
        return _sample_vllm(model, prompts, k, max_new_tokens, temperature, top_p, seed)
    if greedy:
        k = 1
    if backend != "hf":
        raise ValueError(f"generation backend must be 'hf' or 'vllm', got {backend!r}")
    flat = generate(
        model, tokenizer, prompts, batch_size=batch_size, max_new_tokens=max_new_tokens, do_sample=not greedy,
        temperature=temperature, top_p=top_p, seed=seed, num_return_sequences=k,
    )  # fmt: skip
    return [flat[j * k : (j + 1) * k] for j in range(len(prompts))]


def _sample_vllm(model_path, prompts, k, max_new_tokens, temperature, top_p, seed) -> list[list[str]]:
    try:
        from vllm import LLM, SamplingParams
    except ImportError as e:
        raise ImportError("generation backend 'vllm' needs vLLM: pip install 'dora-align[vllm]'") from e
    if not isinstance(model_path, str):
        raise TypeError("the vllm backend loads the policy from its folder: pass the path, not a model")
    llm = LLM(model=model_path, seed=seed)
    params = SamplingParams(n=k, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens, seed=seed)
    if isinstance(prompts[0], list):
        results = llm.chat(prompts, params)
    else:
        results = llm.generate([str(p) for p in prompts], params)
    out = [[c.text for c in r.outputs] for r in results]
    del llm
    return out


def sample_responses_distributed(model, tokenizer, prompts: list, k: int, *, seed: int = 0, **kwargs):
    """``sample_responses`` with the prompts split across the processes of ``accelerate launch`` (one
    process: the same call). Process ``rank`` samples with seed ``seed + 1_000_003 * rank`` (rank 0: ``seed``;
    callers step ``seed`` by one per round, so no two processes or rounds share a stream); every process gets
    all results, in prompt order."""
    state = process_state()
    if state.num_processes == 1:
        return sample_responses(model, tokenizer, prompts, k, seed=seed, **kwargs)
    idx = shard_indices(len(prompts), state.process_index, state.num_processes)
    rank_seed = seed + 1_000_003 * state.process_index
    mine = sample_responses(model, tokenizer, [prompts[i] for i in idx], k, seed=rank_seed, **kwargs)
    gathered = gather_object([(state.process_index, mine)])  # one (rank, results) entry per process
    parts = dict(gathered)
    return unshard([parts[r] for r in range(state.num_processes)], len(prompts))
