"""Command-line entry points: ``check_updates.py`` and ``promote.py``."""
