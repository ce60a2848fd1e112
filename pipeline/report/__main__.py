"""python -m pipeline.report: rebuilds a published partition's report.html (see pipeline.report)."""

import sys

from pipeline.report import main

sys.exit(main())
