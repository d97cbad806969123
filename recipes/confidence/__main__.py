"""``python -m recipes.confidence``: the driver of run_confidence.sh (see recipes.confidence.run)."""

import sys

from recipes.confidence.run import main

sys.exit(main())
