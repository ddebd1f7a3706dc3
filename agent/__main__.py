"""``python -m pulsetrace``: the same as the ``pulsetrace`` command."""

from pulsetrace.cli.main import main

raise SystemExit(main())
