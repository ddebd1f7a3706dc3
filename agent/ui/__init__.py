"""``pulsetrace ui``: the local web console (service map, traces, one trace, health) over the local store.

Nothing is imported here: the command imports :mod:`pulsetrace.ui.app` (Starlette, Jinja2)
only when it runs, and those libraries come with the ``ui`` extra.
"""
