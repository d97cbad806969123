"""``python -m recipes.c3po``: the driver of run_c3po.sh (see recipes.c3po.run)."""

import sys

from recipes.c3po.run import main

sys.exit(main())
