"""`python jobs/export.py --help`: the export command of ray_reid.cli, for checkouts and `ray job submit`."""

import sys

from ray_reid.cli.export import main

if __name__ == "__main__":
    sys.exit(main())
