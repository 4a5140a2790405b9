"""`python -m zeroskip ...`: the command line (zeroskip.cli)."""

import sys

from zeroskip.cli import main

sys.exit(main())
