"""Training side of the product: data, shared preprocessing, architectures, training and model files.

Nothing in this package imports Apache Beam; the scoring pipeline imports this package, never the reverse.
"""

import os as _os

# TensorFlow's C++ start-up lines (oneDNN, CPU features) drown the CLIs' own output; users can still set this.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
