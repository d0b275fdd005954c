"""`routerdb-train` (= `python -m training`): the training command line, one verb per command.

    routerdb-train fit SPEC.json [--validate-only] [--resume]      train and export, as the spec says
    routerdb-train evaluate BUNDLE DATA... [--split 0.2:0] [--out DIR]   quality against baselines
    routerdb-train export BUNDLE OUT --quantize int8               an int8 copy of a trained bundle
    routerdb-train add-model RUN_OR_BUNDLE RECORDS --name NEW --out NEW_BUNDLE   a new LLM, no retraining

Exit codes: 0 done, 2 the input is wrong (usage, spec, data, bundle, name), 1 the work failed
(disk, memory, an export that does not verify); an error is one `error: ...` message on stderr
(`training.command`). `python -m training.fit` (and `.evaluate`, `.export`, `.add_model`) run the
same code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from training import add_model, command, evaluate, export, fit

COMMANDS = (fit.COMMAND, evaluate.COMMAND, export.COMMAND, add_model.COMMAND)


def parser(prog: str = "routerdb-train") -> argparse.ArgumentParser:
    """The command line: one subcommand per entry of COMMANDS."""
    out = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0],
                                  epilog="exit codes: 0 done, 2 bad input or usage, 1 the work failed")
    sub = out.add_subparsers(dest="verb", required=True)
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.description or cmd.help,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        cmd.add_arguments(p)
        p.set_defaults(command=cmd)
    return out


def main(argv: Sequence[str] | None = None, prog: str = "routerdb-train") -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    args = parser(prog).parse_args(given)
    args.command_line = " ".join([prog, *given])
    return command.run(args.command, args)


if __name__ == "__main__":
    sys.exit(main())
