"""What every training command shares (`routerdb-train VERB`, `python -m training VERB`, and the
older `python -m training.fit` and the like): one logging setup, one way to show an error, one
convention of exit codes. It imports only `training.verification` (for `ExportError`).

Exit codes:

    0  done
    1  the work failed: the disk (full, read-only, permission denied), memory, an export or
       quantised copy that does not reproduce its reference, a check of a written bundle
    2  the input is wrong: a usage error, the spec, a data or records file, a bundle, an LLM name;
       the message says what was received, what is allowed and how to fix it

An error is shown once, on stderr, as one `error: ...` message (and in the run's `train.log`,
for `fit`); anything else raised is a bug and keeps its traceback (Python exits 1).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from training.verification import ExportError

__all__ = ["BAD_INPUT", "FAILED", "OK", "Command", "exit_code", "log_to_file", "main", "run"]

OK, FAILED, BAD_INPUT = 0, 1, 2
# what the user fixes by changing what they pass (SpecError, DataError, BundleError, ... are
# ValueErrors; UnknownModelError is a KeyError)
INPUT_ERRORS = (ValueError, KeyError, FileNotFoundError, NotADirectoryError, IsADirectoryError)
# what went wrong while working: OSError (disk full, read-only, ...), a bundle that does not verify;
# any other RuntimeError is a bug (or torch's) and keeps its traceback
WORK_ERRORS = (OSError, MemoryError, ExportError)
QUIET = ("httpx", "urllib3", "filelock")  # libraries whose INFO lines say nothing about the run

log = logging.getLogger(__name__)
_HANDLERS: list[logging.Handler] = []  # the handlers this module added to the root logger


@dataclass(frozen=True)
class Command:
    """One verb of the training command line: its arguments and what it runs (returns an exit code)."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str = ""


def exit_code(exc: BaseException) -> int | None:
    """BAD_INPUT or FAILED for an error a command reports; None for one that is a bug."""
    if isinstance(exc, INPUT_ERRORS):
        return BAD_INPUT
    return FAILED if isinstance(exc, WORK_ERRORS) else None


def message(exc: BaseException) -> str:
    """The error's own words (a plain KeyError's str() would quote them)."""
    plain_key_error = isinstance(exc, KeyError) and type(exc).__str__ is KeyError.__str__
    return str(exc.args[0]) if plain_key_error and exc.args else str(exc)


def run(command: Command, args: argparse.Namespace) -> int:
    """`command.run(args)` under the shared logging, its errors mapped to the exit codes above."""
    _setup_logging()
    try:
        return command.run(args)
    except Exception as exc:
        code = exit_code(exc)
        if code is None:
            raise
        log.error("%s", message(exc))
        return code
    finally:
        _remove_handlers()


def main(command: Command, argv: Sequence[str] | None, prog: str) -> int:
    """One command on its own (`python -m training.fit ...`): the same as `routerdb-train VERB ...`."""
    parser = argparse.ArgumentParser(prog=prog, description=command.description or command.help,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    command.add_arguments(parser)
    given = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(given)
    args.command_line = " ".join([prog, *given])
    return run(command, args)


class _ConsoleFormatter(logging.Formatter):
    """Progress lines with time and logger; a command's error as the one line `error: ...`."""

    def format(self, record: logging.LogRecord) -> str:
        if record.name == log.name and record.levelno >= logging.ERROR:
            return f"error: {record.getMessage()}"
        return super().format(record)


_FORMAT, _DATE = "%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"


def _setup_logging() -> None:
    """INFO and above to stderr; replaces what an earlier command in this process added."""
    _remove_handlers()
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    _add(logging.StreamHandler(), _ConsoleFormatter(_FORMAT, _DATE))
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)


def log_to_file(path: Path) -> None:
    """Also write every log line (and the error, if the command fails) to `path` (a run's train.log)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _add(logging.FileHandler(path), logging.Formatter(_FORMAT, _DATE))


def _add(handler: logging.Handler, formatter: logging.Formatter) -> None:
    handler.setFormatter(formatter)
    logging.getLogger().addHandler(handler)
    _HANDLERS.append(handler)


def _remove_handlers() -> None:
    """Take this module's handlers off the root logger, so the next command gets fresh ones."""
    for handler in _HANDLERS:
        logging.getLogger().removeHandler(handler)
        handler.close()
    _HANDLERS.clear()
