"""``python -m emmafuse`` is the same as the ``emmafuse`` command."""

from emmafuse.cli import main

raise SystemExit(main())
