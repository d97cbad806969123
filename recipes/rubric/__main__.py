"""``python -m recipes.rubric``: the driver of run_rubric.sh (see recipes.rubric.run)."""

import sys

from recipes.rubric.run import main

sys.exit(main())
