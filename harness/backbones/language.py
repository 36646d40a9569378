"""The causal language model and its tokenizer.

    lm = tiny_language_model(params, tokenizer)                  # LlamaForCausalLM / Qwen2ForCausalLM
    lm, tokenizer = language_model_from_directory("/models/lm")  # AutoModelForCausalLM + AutoTokenizer
    lm = adapted(lm, params, "lora", ["q_proj", "v_proj"])          # full, LoRA adapters only, or frozen

The LVLM methods feed the LM ``inputs_embeds`` and read hidden states; the LM head is only
used by stage 0 (describe the image), and its weights are tied to the input embeddings.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerBase,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from harness.backbones.loading import pretrained_model
from harness.backbones.params import BackboneParams
from harness.core.errors import HarnessError


def lora_target(modules: list[str]) -> str:
    """The peft target regex for ``modules`` of the language model only: the vision tower also
    has q_proj / k_proj / v_proj modules (docs/sources.md)."""
    names = "|".join(re.escape(name) for name in modules)
    return rf"^(?!.*vision).*\.({names})$"


def tiny_language_model(params: BackboneParams, tokenizer: PreTrainedTokenizerBase) -> nn.Module:
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=params.language_hidden,
        intermediate_size=4 * params.language_hidden,
        num_hidden_layers=params.language_layers,
        num_attention_heads=params.language_heads,
        num_key_value_heads=params.language_heads,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    if params.language_family == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**common))
    return LlamaForCausalLM(LlamaConfig(**common))


def language_model_from_directory(
    directory: str | Path, field: str = "backbone.language_dir", tokenizer_dir: str | Path | None = None
):
    """(causal LM, tokenizer) from a local directory (the tokenizer from ``tokenizer_dir`` if given)."""
    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise HarnessError("no config.json in the language model directory", file=directory, field=field,
                           fix="point it at a save_pretrained() directory")
    model = pretrained_model(AutoModelForCausalLM, directory)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir or directory, local_files_only=True, padding_side="right")
    return model, tokenizer


def decoder(language_model: nn.Module) -> nn.Module:
    """The transformer stack of a causal LM (``.model``), which returns hidden states."""
    return getattr(language_model, "model", language_model)


def with_lora(language_model: nn.Module, params: BackboneParams, targets: list[str]) -> nn.Module:
    """Wrap the LM with LoRA adapters on the modules named ``targets`` (peft); every other LM
    weight is frozen. Returns the peft model."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=params.lora_rank, lora_alpha=params.lora_alpha, lora_dropout=params.lora_dropout,
                        target_modules=lora_target(targets))
    try:
        with warnings.catch_warnings():  # peft reads transformers 5's deprecated is_gradient_checkpointing
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            return get_peft_model(language_model, config)
    except ValueError:  # peft's NoMatchingPeftModuleError
        raise HarnessError(f"no module of the language model is named {targets}",
                           field="method.params.lora_targets",
                           fix="name its projections, e.g. q_proj, v_proj") from None


def adapted(language_model: nn.Module, params: BackboneParams, adaptation: str, targets: list[str]) -> nn.Module:
    """The LM as ``adaptation`` trains it: every weight (full), LoRA adapters on ``targets``
    only (lora, rank and alpha from ``params``), or nothing (frozen)."""
    if adaptation == "full":
        return language_model
    for tensor in language_model.parameters():
        tensor.requires_grad_(False)
    return with_lora(language_model, params, targets) if adaptation == "lora" else language_model
