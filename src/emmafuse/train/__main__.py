"""``python -m emmafuse.train {all,sensing,fuser,export,defaults} ...`` (also under torchrun)."""

import sys

from emmafuse.train.cli import main

sys.exit(main())
