"""`python jobs/train.py --help`: the train command of ray_reid.cli, for checkouts and `ray job submit`."""

import sys

from ray_reid.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
