"""The benchmark of the staging and promotion targets: run ``bench/run.py``."""
