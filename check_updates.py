"""Stage each app's newest full Microsoft 365 for Mac build: see README.md."""

import sys

from m365_update_manager.cli.check import main

if __name__ == "__main__":
    sys.exit(main())
