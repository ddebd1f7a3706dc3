"""``python -m agent``: the same as the ``pulsetrace`` command."""

from agent.cli import main

raise SystemExit(main())
