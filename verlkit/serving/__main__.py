"""``python -m verlkit.serving serve|wait-ready|stop ...`` (see verlkit.serving.cli)."""

import sys

from verlkit.serving.cli import main

sys.exit(main())
