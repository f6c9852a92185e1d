"""One file per workflow a command runs: train, tune, evaluate, quickstart, data gate.

A recipe is the only code that sees a command's whole config; it joins the layers
below (data, models, gate, train, serve, eval) and returns what the CLI prints. A recipe
imports lower layers only, never another recipe (``tests/unit/test_layering.py``):
what two recipes share belongs in a layer below.
"""
