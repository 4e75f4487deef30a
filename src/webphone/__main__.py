"""`python -m webphone`: the `webphone` command."""

import sys

from webphone.cli import main

if __name__ == "__main__":
    sys.exit(main())
