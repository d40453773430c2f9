"""Promote aged builds to live, roll back, hold and verify: see README.md."""

import sys

from m365_update_manager.cli.promote import main

if __name__ == "__main__":
    sys.exit(main())
