"""``python -m ess_tui`` is the ``ess-tui`` command."""

from ess_tui.cli import main

raise SystemExit(main())
