"""``python -m recipes.pipeline``: the driver of run_pipeline.sh (see recipes.pipeline.run)."""

import sys

from recipes.pipeline.run import main

sys.exit(main())
