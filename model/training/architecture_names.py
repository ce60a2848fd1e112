"""Names the architectures and augmentations the training CLI offers, without importing Keras, so that
`python -m model.train --help` answers at once; model.training.architectures builds them (a test keeps the two in
step)."""

ARCHITECTURES = ("mlp", "cnn", "cnn-same", "cnn3", "cnn3-wide")
HAS_DROPOUT = ("cnn", "cnn-same", "cnn3", "cnn3-wide")  # builders that take a dropout rate
AUGMENTATIONS = ("none", "full", "shift-flip", "shift-flip-erase")
# The shipped model's architecture (`make train-default` is its whole recipe), and so the CLI's default.
DEFAULT_ARCHITECTURE = "cnn3-wide"
