"""``python -m netloop``: see ``netloop.cli``."""

import sys

from .cli import main

sys.exit(main())
