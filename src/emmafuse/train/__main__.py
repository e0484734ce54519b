"""``python -m emmafuse.train {all,sensing,fuser,export,defaults,recipes} ...`` (also under torchrun)."""

import sys

from emmafuse.cli.train import main

sys.exit(main())
