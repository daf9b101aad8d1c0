"""``python -m ditkit ...`` (what ``torchrun -m`` and ``accelerate launch -m`` call)."""

import sys

from .cli import main

sys.exit(main())
