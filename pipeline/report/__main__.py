"""python -m pipeline.report: rebuilds a published partition's report.html (see pipeline.report.report)."""

import sys

from pipeline.report.report import main

sys.exit(main())
