"""``python -m metanlp.runs ROOT``: the runs folder's supervisor (started automatically; see supervisor.py)."""

import sys

from metanlp.runs.supervisor import main

sys.exit(main())
