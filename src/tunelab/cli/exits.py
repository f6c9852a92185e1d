"""The exit codes of the `tunelab` command, defined once.

Every CLI module returns these names, and ``exit_code`` maps each ``TunelabError``
class to one of them; README.md ("Exit codes") documents the same table, and a test
keeps the two equal. This module knows nothing of argument parsing or printing.

A code says which kind of thing to fix: the command line or config (2), the data (3),
the model (4), the store or a run folder (5), the training state (6), the database
(7). 1 is a command
that ran and found problems (``tunelab data check`` found errors), like ``grep`` or
``diff``; 70 (``EX_SOFTWARE`` of sysexits.h) is a bug in tunelab and never a user's
mistake; 130 is 128 + SIGINT, what shells report for Ctrl-C.
"""

from __future__ import annotations

from tunelab.errors import (
    ConfigError,
    DatabaseError,
    DataError,
    ModelError,
    StoreError,
    TrainingError,
    TunelabError,
    UsageError,
)

OK = 0
PROBLEMS = 1  # the command ran and found problems (errors in data, a leak, a bias threshold)
USAGE = 2  # a wrong command line, an invalid config or setting (argparse uses 2 as well)
DATA = 3  # input data is missing, unreadable or invalid
MODEL = 4  # a model cannot be found, fetched, trusted or loaded
STORE = 5  # the model store or a run folder is missing, incomplete or unwritable
TRAINING = 6  # training cannot start or continue (changed settings on resume, NaN loss)
DATABASE = 7  # the database cannot be opened, migrated or written (bad URL, server down)
INTERNAL = 70  # a bug in tunelab: the traceback is written to a file
INTERRUPTED = 130  # Ctrl-C
BROKEN_PIPE = 141  # stdout closed early (`| head`); 128 + SIGPIPE, as other tools exit

# Most specific first: the first class an error is an instance of decides its code.
_BY_ERROR: tuple[tuple[type[TunelabError], int], ...] = (
    (UsageError, USAGE),
    (ConfigError, USAGE),
    (DataError, DATA),
    (ModelError, MODEL),
    (StoreError, STORE),
    (TrainingError, TRAINING),
    (DatabaseError, DATABASE),
)

# The table README.md documents, in its order: code -> what it means.
DOCUMENTED: dict[int, str] = {
    OK: "success",
    PROBLEMS: "the command ran and found problems",
    USAGE: "usage or config",
    DATA: "data",
    MODEL: "model",
    STORE: "store or run folder",
    TRAINING: "training",
    DATABASE: "database",
    INTERNAL: "internal error (a bug in tunelab)",
    INTERRUPTED: "interrupted",
    BROKEN_PIPE: "the output's reader went away",
}


def exit_code(error: TunelabError) -> int:
    """The exit code for a ``TunelabError``.

    Args:
        error: the error that stopped the command.

    Returns:
        The code of its most specific class in the table; ``PROBLEMS`` for a plain
        ``TunelabError`` (tunelab itself raises only subclasses).
    """
    for cls, code in _BY_ERROR:
        if isinstance(error, cls):
            return code
    return PROBLEMS
