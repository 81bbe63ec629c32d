"""``python -m bloomseg``."""

from bloomseg.cli import main

raise SystemExit(main())
