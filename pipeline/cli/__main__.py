"""``python -m placedemarche.pipeline.cli``."""

import sys

from placedemarche.pipeline.cli import main

sys.exit(main())
