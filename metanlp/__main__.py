"""``python -m metanlp``: the command-line interface."""

from metanlp.cli import main

raise SystemExit(main())
