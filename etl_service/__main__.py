"""`python -m etl_service run|drain`."""

import sys

from etl_service.entrypoints.cli import main

sys.exit(main())
