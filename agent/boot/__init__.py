"""Holds the ``sitecustomize`` that ``pulsetrace run`` puts on the child's ``PYTHONPATH``."""
