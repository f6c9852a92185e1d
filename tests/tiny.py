"""Tiny random models and tokenizers built in-process, so no test needs the network.

The tokenizer is a byte-level BPE trained on a few sentences, with ChatML special tokens
and a ChatML chat template (the same shape as SmolLM2's), so chat rendering, loss masks
and end-of-turn handling are exercised as with the real model.
"""

from __future__ import annotations

from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "My invoice was charged twice, please refund the payment.",
    "The app crashes when I open settings on my phone.",
    "Where is my parcel? The tracking number does not work.",
    "I want to reset my password and change the account email.",
    "Natalia sold clips to 48 of her friends in April. #### 72",
    "system user assistant billing technical shipping account returns",
    "0 1 2 3 4 5 6 7 8 9 + - * / = ? ! , . : ; ' \" ( )",
]


def make_tiny_tokenizer(vocab_size: int = 400):
    """A fast byte-level BPE tokenizer with ChatML specials; pad is a separate token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|pad|>",
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def make_tiny_model(tokenizer, seed: int = 0, layers: int = 2, hidden: int = 32):
    """A tiny random Llama (2 layers, hidden 32) sized to the tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(cfg)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def save_tiny_model_dir(path: Path, seed: int = 0, lively: bool = False) -> Path:
    """Write a tiny model + tokenizer as a Hugging Face folder (safetensors) at ``path``.

    ``lively``: weights redrawn larger; at the default init the model repeats one token for
    every prompt, which makes comparisons between models or prompts vacuous.
    """
    tok = make_tiny_tokenizer()
    model = make_tiny_model(tok, seed=seed)
    if lively:
        import torch

        torch.manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 2:
                    p.normal_(0.0, 0.5)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path
