"""Stage Microsoft 365 for Mac updates, let them age, then release them to the fleet."""

__version__ = "0.1.0"
