"""Loading the policy (and a reference given by name) as TRL 1.16's DPOTrainer does: ``model_init_kwargs`` and
``quantization_config`` go to ``from_pretrained``; the dtype is float32 unless ``model_init_kwargs`` sets one (a
bf16 checkpoint is not trained in bf16 by default); k-bit (QLoRA) loading needs bitsandbytes on a CUDA GPU and a
PEFT adapter to train. A vision-language model loads with its own class, as TRL."""

from __future__ import annotations

import torch

__all__ = ["load_causal_lm", "model_kwargs", "check_quantization", "is_quantized"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def model_kwargs(model_init_kwargs: dict | None, quantization_config=None) -> dict:
    """The keyword arguments of ``from_pretrained``: ``model_init_kwargs`` with ``quantization_config`` added (set in
    one of the two places only), and ``dtype`` float32 unless set ("auto": the checkpoint's own), as TRL."""
    kwargs = dict(model_init_kwargs or {})
    if quantization_config is not None:
        if kwargs.get("quantization_config") is not None:
            raise ValueError(
                "quantization_config is set both as a trainer argument and in model_init_kwargs: set it in one place"
            )
        kwargs["quantization_config"] = quantization_config
    dtype = kwargs.get("dtype", "float32")
    if isinstance(dtype, str) and dtype != "auto":
        if dtype not in DTYPES:
            raise ValueError(f"model_init_kwargs dtype {dtype!r}: use one of {', '.join(DTYPES)} or 'auto'")
        dtype = DTYPES[dtype]
    kwargs["dtype"] = dtype
    return kwargs


def is_quantized(model) -> bool:
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


def check_quantization(kwargs: dict, peft_config) -> None:
    """k-bit loading (a ``quantization_config``) needs bitsandbytes on a CUDA GPU, and a PEFT adapter to train (the
    quantised weights themselves take no gradient): QLoRA. Refused in one line, before the model loads."""
    if kwargs.get("quantization_config") is None:
        return
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None or not torch.cuda.is_available():
        why = "bitsandbytes is not installed" if importlib.util.find_spec("bitsandbytes") is None else "no CUDA GPU"
        raise ValueError(
            f"quantization_config loads the model in 4/8 bits with bitsandbytes on a CUDA GPU, and here {why}: run "
            "on a GPU with `pip install bitsandbytes`, or drop quantization_config"
        )
    if peft_config is None:
        raise ValueError(
            "quantization_config: a quantised model trains only through a PEFT adapter; pass peft_config "
            "(e.g. peft.LoraConfig()) for QLoRA"
        )


def load_causal_lm(name: str, kwargs: dict):
    """``AutoModelForCausalLM.from_pretrained(name, **kwargs)``, or for a vision-language model (a config with a
    vision tower) its own class (``config.architectures``, as TRL; else ``AutoModelForImageTextToText``); a k-bit
    model is placed on this process's GPU."""
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(name, trust_remote_code=kwargs.get("trust_remote_code", False),
                                        revision=kwargs.get("revision"))  # fmt: skip
    architecture = AutoModelForCausalLM
    if getattr(config, "vision_config", None) is not None:
        named = (config.architectures or [None])[0]
        architecture = getattr(transformers, named, None) if named else None
        architecture = architecture or AutoModelForImageTextToText
    if kwargs.get("quantization_config") is not None and kwargs.get("device_map") is None:
        from accelerate import PartialState

        kwargs = {**kwargs, "device_map": {"": PartialState().local_process_index}}
    return architecture.from_pretrained(name, **kwargs)
