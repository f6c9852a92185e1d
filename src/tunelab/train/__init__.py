"""Training: one run, phases, the loop, the fast path, checkpoints, search, processes.

- ``run``: one training run from a config (data, model, run folder, loop, result);
  ``phased``: phases in order, each an ordinary run handed the previous model;
- ``loop``, ``batching``, ``loss``, ``schedule``: the step loop (answer-token loss,
  validation, early stopping, keep-best);
- ``fastpath``, ``kernels``: packed rows and fused kernels, and the patching that
  switches them on only inside training and restores everything after;
- ``checkpoint``, ``resume``, ``signals``: crash-safe checkpoints, exact resume, a
  graceful stop on SIGINT/SIGTERM;
- ``distributed``, ``ranks``: several data-parallel processes;
- ``search``, ``study``, ``phases``: hyperparameter search and phase plumbing.

It receives evaluation hooks from its caller and never imports ``tunelab.eval``.
"""
