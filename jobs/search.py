"""`python jobs/search.py --help`: the search command of ray_reid.cli, for checkouts and `ray job submit`."""

import sys

from ray_reid.cli.search import main

if __name__ == "__main__":
    sys.exit(main())
