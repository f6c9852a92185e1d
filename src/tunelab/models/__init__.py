"""Models: the store (pull, import, list), safe loading, adapters, trained runs, export.

- ``catalog``, ``pull``, ``store``, ``resolve``: the models tunelab knows, fetching
  them offline from PyPI GGUF packages, the on-disk store, and resolving a name;
- ``loading``, ``hardware``: safetensors-only loading, and what this machine runs fast;
- ``adapters``: LoRA, freezing and full fine-tuning set-up;
- ``runs``: a finished run folder loaded for generation, and its merged export;
- ``export``: merging an adapter into standalone weights.
- ``gguf_read``, ``llamacpp``: what a GGUF says about serving it, and running it with
  llama.cpp in token ids (the optional ``llamacpp`` extra).

It knows nothing of data files, training loops or evaluation.
"""
