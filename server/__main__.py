"""``python -m server`` runs the reference server's command line."""

import sys

from server.cli import main

sys.exit(main())
