"""python -m pipeline.report: rebuilds a published partition's report.html (see pipeline.report.report)."""

import sys

from pipeline import options

options.answer_help(options.report_parser(), sys.argv[1:])

from pipeline.report.report import main  # noqa: E402  (after --help, which needs no Beam)

sys.exit(main())
