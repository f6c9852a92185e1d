"""Serving: the generation engine (batched, left-padded, stops at end-of-turn).

``engine`` renders chats with the training template code, so a model is served the
prompt it was trained on. It knows nothing of HTTP; the server app (``serve.app``,
reserved as layer 6 in ``tests/unit/test_layering.py``) will sit above it.
``llamacpp_engine`` batches requests for a GGUF file on llama.cpp instead of transformers.
"""
