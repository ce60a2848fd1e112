"""Training side of the product and the model's contracts, by concern: cards/ (the model card and its checks),
recipes/ (the preprocessing every card names), runtimes/ (Keras and ONNX behind one interface), training/ (data,
architectures, checkpoints, figures); the commands (card, train, evaluate, predict, weights_text) at the top.

Nothing in this package imports Apache Beam; the scoring pipeline imports this package, never the reverse.
"""

import os as _os

# TensorFlow's C++ start-up lines (oneDNN, CPU features) drown the CLIs' own output; users can still set this.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow turns its oneDNN kernels on by itself only on some CPUs. Without them (measured on an AMD EPYC here) a
# model call's float sums depend on how many threads run it, so a worker with one thread and one with two gave rows
# that differed by ~5e-7, and the forward pass was 1.7x slower; with them rows are bit-identical at any thread count.
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
