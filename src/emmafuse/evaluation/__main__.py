"""``python -m emmafuse.evaluation ...`` is ``emmafuse eval ...`` (an entry point, like ``emmafuse.train``'s)."""

import sys

from emmafuse.cli.eval import main

sys.exit(main())
