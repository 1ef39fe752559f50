"""`python jobs/purify.py --help`: the purify command of ray_reid.cli, for checkouts and `ray job submit`."""

import sys

from ray_reid.cli.purify import main

if __name__ == "__main__":
    sys.exit(main())
