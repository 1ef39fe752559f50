"""`python jobs/tune.py --help`: the tune command of ray_reid.cli, for checkouts and `ray job submit`."""

import sys

from ray_reid.cli.tune import main

if __name__ == "__main__":
    sys.exit(main())
