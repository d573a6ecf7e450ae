"""`python -m julnet` is the `julnet` command."""

import sys

from julnet.cli import main

sys.exit(main())
