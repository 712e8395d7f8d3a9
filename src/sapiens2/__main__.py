"""``python -m sapiens2 ...``: the same as the ``sapiens2`` command."""

import sys

from sapiens2.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
