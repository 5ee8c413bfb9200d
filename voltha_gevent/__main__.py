"""``python -m voltha_gevent``: the same as the ``voltha-gevent`` console script."""

import sys

from .cli import main

sys.exit(main())
