"""python -m flask_cf_prometheus.discovery: cf-discovery without its console script."""

import sys

from ._cli import main

sys.exit(main())
