"""`python -m app`: the same command as the `payment-service` console script."""

import sys

from app.cli import main

sys.exit(main())
