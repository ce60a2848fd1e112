"""Defines what every other module agrees on: class names, image shape, preprocessing versions, record keys."""

# Fashion-MNIST's ten classes, in label-index order (Xiao et al. 2017).
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
NUM_CLASSES = len(CLASS_NAMES)

# One image as the model sees it: height, width; grey, one byte per pixel, item bright on a dark background.
IMAGE_HEIGHT = 28
IMAGE_WIDTH = 28
IMAGE_SHAPE = (IMAGE_HEIGHT, IMAGE_WIDTH)
IMAGE_PIXELS = IMAGE_HEIGHT * IMAGE_WIDTH

# Bumped whenever preprocessing.to_model_input changes its output for any input; stored in every model card.
PREPROCESSING_VERSION = "fmnist-catalogue-v2"
# Versions a model card may name and still be scored by this code. v2 changed only how photos larger than 320 pixels
# are converted (trimmed and fitted at reduced scale); every image that passes through unchanged, the IDX training
# data among them, gives the same bytes under both, so a model trained under v1 is scored correctly by v2.
COMPATIBLE_PREPROCESSING_VERSIONS = ("fmnist-catalogue-v1", PREPROCESSING_VERSION)

# tf.train.Example feature names used by the TFRecord source and sample files.
RECORD_KEY_IMAGE = "image/encoded"
RECORD_KEY_RAW_PIXELS = "image/raw"  # 784 bytes (or integers 0-255) of 28x28 grey pixels, row by row
RECORD_KEY_FILENAME = "image/filename"
RECORD_KEY_LABEL = "image/class/label"

