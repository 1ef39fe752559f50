"""`python jobs/embed.py --help`: the embed command of ray_reid.cli, for checkouts and `ray job submit`."""

import sys

from ray_reid.cli.embed import main

if __name__ == "__main__":
    sys.exit(main())
