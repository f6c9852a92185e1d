"""Choose what trains: a LoRA adapter, every weight, or only some blocks.

Each function receives only its own settings. The model is changed in place (or
wrapped, for LoRA) and the caller gets back the module to train.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.config.schema import FreezeSettings, LoraSettings
from tunelab.errors import ConfigError


@dataclass
class TrainableSummary:
    """How many parameters train, out of how many."""

    trainable: int
    total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / max(self.total, 1)


def count_parameters(model: Any) -> TrainableSummary:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return TrainableSummary(trainable, total)


def apply_lora(model: Any, settings: LoraSettings, trainable_token_ids: list[int] | None = None) -> Any:
    """Wrap ``model`` with a LoRA adapter (peft); base weights are frozen.

    Args:
        model: a causal LM.
        settings: rank, alpha, dropout, target modules.
        trainable_token_ids: ids of newly added special tokens whose embedding rows must
            train (peft's trainable-token deltas, saved with the adapter).

    Returns:
        The peft model.
    """
    from peft import LoraConfig, get_peft_model

    kwargs: dict[str, Any] = {}
    if trainable_token_ids:
        # Only the new rows train; they are saved with the adapter, so merge/export keeps them.
        kwargs["trainable_token_indices"] = {"embed_tokens": list(trainable_token_ids)}
    cfg = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        task_type="CAUSAL_LM",
        **kwargs,
    )
    return get_peft_model(model, cfg)


ADAPTER_CONFIG = "adapter_config.json"  # what PEFT writes beside the adapter's weights


def adapter_folder(ref: str | Path) -> Path:
    """The LoRA adapter folder of a run folder (``RUN/adapter``) or of an adapter folder.

    Raises:
        ConfigError: neither holds a PEFT adapter (``adapter_config.json``).
    """
    p = Path(ref)
    for folder in (p / "adapter", p):
        if (folder / ADAPTER_CONFIG).is_file():
            return folder
    raise ConfigError([f"model.adapter: {str(ref)!r} is neither a run folder with adapter/ nor "
                       f"an adapter folder (no {ADAPTER_CONFIG}); give a finished LoRA run"])


def load_lora(model: Any, folder: str | Path) -> Any:
    """Wrap ``model`` with a saved LoRA adapter whose weights train on from where they are.

    The adapter's saved shape applies (its rank, alpha, targets and any trainable new
    token rows); base weights stay frozen, as with ``apply_lora``.

    Args:
        model: the causal LM the adapter was trained on (special tokens already added).
        folder: an adapter folder (``adapter_folder``).

    Returns:
        The peft model, its adapter trainable.
    """
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(folder), is_trainable=True)


def _block_index(name: str) -> int | None:
    m = re.search(r"\.layers\.(\d+)\.", name) or re.search(r"\.h\.(\d+)\.", name)
    return int(m.group(1)) if m else None


def apply_freeze(model: Any, settings: FreezeSettings) -> Any:
    """Train only the last K blocks and/or parameters matching a name pattern.

    Raises:
        ConfigError: the rule selects no parameter, or K exceeds the model's blocks.
    """
    names = [n for n, _ in model.named_parameters()]
    blocks = sorted({b for b in (_block_index(n) for n in names) if b is not None})
    keep: set[str] = set()
    if settings.last_k_blocks is not None:
        if settings.last_k_blocks > len(blocks):
            raise ConfigError([
                f"freeze.last_k_blocks: the model has {len(blocks)} blocks "
                f"(given: {settings.last_k_blocks})"
            ])
        chosen = set(blocks[-settings.last_k_blocks:])
        keep |= {n for n in names if _block_index(n) in chosen}
    if settings.pattern is not None:
        rx = re.compile(settings.pattern)
        keep |= {n for n in names if rx.search(n)}
    if settings.train_embeddings:
        keep |= {n for n in names if "embed" in n}
    if not keep:
        raise ConfigError([f"freeze: no parameter matches (pattern: {settings.pattern!r})"])
    for n, p in model.named_parameters():
        p.requires_grad_(n in keep)
    return model


def apply_full(model: Any) -> Any:
    """Every parameter trains."""
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def add_special_tokens(model: Any, tokenizer: Any, tokens: list[str]) -> list[int]:
    """Add special tokens to the tokenizer and resize the embeddings to match.

    Returns:
        The ids of the tokens that were new (empty when all existed already).
    """
    if not tokens:
        return []
    before = len(tokenizer)
    tokenizer.add_special_tokens({"additional_special_tokens": list(tokens)},
                                 replace_extra_special_tokens=False)
    new_ids = list(range(before, len(tokenizer)))
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        # mean_resizing: new rows start at the mean embedding, not random noise.
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    return new_ids


def set_dropout(model: Any, p: float) -> int:
    """Set every dropout probability in the model to ``p``; returns how many were set."""
    import torch

    n = 0
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = p
            n += 1
        if isinstance(getattr(m, "attention_dropout", None), float):
            m.attention_dropout = p  # Llama-style attention reads this at forward time
            n += 1
    if hasattr(model, "config") and hasattr(model.config, "attention_dropout"):
        model.config.attention_dropout = p
    return n
