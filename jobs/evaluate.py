"""`python jobs/evaluate.py --help`: the evaluate command of ray_reid.cli, for checkouts and `ray job submit`."""

import sys

from ray_reid.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
