"""Allow ``python -m fastgap``."""

import sys

from fastgap.cli import main

sys.exit(main())
