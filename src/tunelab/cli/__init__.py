"""The `tunelab` command: argument parsing and printing; the only place that prints or exits.

- ``main``: the parser of every command, dispatch, and the one error handler (a
  ``TunelabError`` becomes its message, hint and exit code; anything else is a bug,
  reported in one line with the file that holds its traceback);
- ``exits``: the exit codes, defined once; ``args``: checked argument types;
- ``reporter``: the ``Reporter`` that writes progress, warnings and bars with a
  steady-state ETA to stderr;
- ``data_check``, ``data_ops``, ``evaluate``, ``tune``, ``launch``: the commands with
  many options, each registering its own sub-parsers.

Results go to stdout, everything else to stderr. Work itself happens in
``tunelab.recipes`` (one per workflow) and the layers below, which never print.
"""
