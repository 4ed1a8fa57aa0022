"""``python -m main_process`` is ``log-monitor``."""

import sys

from main_process.cli import main

sys.exit(main())
