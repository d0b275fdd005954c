"""`python -m training VERB ...`: the training command line (`training.cli`), as `routerdb-train`."""

import sys

from training.cli import main

sys.exit(main(prog="python -m training"))
