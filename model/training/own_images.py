"""A user's own labelled images: a folder with one sub-folder per class, or a list file of `PATH LABEL` lines, read
through the model's preprocessing recipe (a file that cannot be read is skipped and counted); and the flags and
loader with which the training and evaluation CLIs combine them with Fashion-MNIST.

Every file is read by model.reading, so a FIFO, a device or a link to one is a counted skip, never a hang; folders
are walked without following links to folders, and file names are shown through model.display."""

import collections
import os
import sys
from dataclasses import dataclass

import numpy as np

from model import reading, recipes
from model.cards.card_spec import FASHION_MNIST, ModelSpec, class_index
from model.display import shortened, visible
from model.recipes import preprocessing
from model.training.data import DEFAULT_DATA_DIR, DatasetError, LabelledImages, load_split


@dataclass(frozen=True)
class Unreadable:
    """A file that did not become a model input: a short reason (preprocessing's, or `cannot read`) and the message."""

    path: str
    reason: str
    message: str


@dataclass(frozen=True)
class ImageFiles:
    """Files read through a model's preprocessing: the images of those that could be read, and why the others not."""

    images: np.ndarray  # uint8[N, *spec.pixel_shape], in the order asked
    read: np.ndarray  # bool per file asked for: True where its image is in `images`
    unreadable: tuple  # an Unreadable per file that could not be read, in the order asked


def load_sources(split: str, data_dir: str, fashion_mnist: bool = True, folders=(), lists=(),
                 max_pixels: int = preprocessing.DEFAULT_MAX_PIXELS, spec: ModelSpec = FASHION_MNIST) -> list:
    """The labelled sets one run uses, in order: Fashion-MNIST's `split` (unless fashion_mnist is False), then each
    class folder and each list file of the user's own images, labelled with spec's classes and made into its input."""
    if fashion_mnist and spec.class_names != FASHION_MNIST.class_names:
        raise DatasetError("Fashion-MNIST's images can only be learnt with its own ten classes; add --no-fashion-mnist "
                           "to use only your own images")
    sources = [load_split(split, data_dir)] if fashion_mnist else []
    sources += [load_labelled_folder(folder, max_pixels, spec) for folder in folders]
    sources += [load_list_file(list_path, max_pixels, spec) for list_path in lists]
    if not sources:
        raise DatasetError("no images to use: without Fashion-MNIST, give a folder or a list file of your own images")
    return sources


def folder_classes(roots) -> tuple:
    """The class names that the class folders of `roots` name, sorted: what a run learns when nothing else names its
    classes. Hidden entries are passed over, as loading them does."""
    names = set()
    for root in roots:
        if not os.path.isdir(root):
            raise DatasetError(f"{root} is not a folder; give a folder with one sub-folder per class")
        names.update(entry.name for entry in _class_folders(root))
    return tuple(sorted(names))


def load_labelled_folder(root: str, max_pixels: int = preprocessing.DEFAULT_MAX_PIXELS,
                         spec: ModelSpec = FASHION_MNIST) -> LabelledImages:
    """Loads a folder holding one sub-folder per class, named after the class (for Fashion-MNIST a '/' written as '-':
    T-shirt-top) or by its index. Every file below a class folder goes through spec's preprocessing; unreadable ones
    are skipped."""
    if not os.path.isdir(root):
        raise DatasetError(f"{root} is not a folder; give a folder with one sub-folder per class")
    hint = " (in a folder name, write '/' as '-': T-shirt-top)" if spec.class_names == FASHION_MNIST.class_names else ""
    paths, labels = [], []
    for entry in _class_folders(root):
        label = _label(entry.name, entry.path, spec, hint)
        files = _files_below(entry.path)
        if not files:
            raise DatasetError(f"{visible(entry.path)}: the class folder is empty; add images of "
                               f"{visible(spec.class_names[label])} or remove it")
        paths += files
        labels += [label] * len(files)
    if not paths:
        raise DatasetError(f"{root} has no class folders; give it one sub-folder per class, e.g. "
                           f"{os.path.join(root, spec.class_names[0].replace('/', '-'))}")
    return _read_labelled(paths, labels, "folder", root, max_pixels, spec)


def _class_folders(root: str) -> list:
    """The class folders directly in root, by name; a link to a folder is refused."""
    folders = []
    for entry in sorted(os.scandir(root), key=lambda entry: entry.name):
        if entry.name.startswith("."):
            continue
        if entry.is_symlink() and entry.is_dir():
            raise DatasetError(f"{visible(entry.path)}: the class folder is a link; links to folders are not "
                               "followed, so give the folder itself (or copy it here)")
        if entry.is_dir(follow_symlinks=False):
            folders.append(entry)
    return folders


def load_list_file(list_path: str, max_pixels: int = preprocessing.DEFAULT_MAX_PIXELS,
                   spec: ModelSpec = FASHION_MNIST) -> LabelledImages:
    """Loads the images a text file lists, one `PATH LABEL` line each: the label one of spec's class names or an index,
    a relative path relative to the list file; blank lines and lines starting with # are passed over. Unreadable
    images are skipped."""
    base = os.path.dirname(os.path.abspath(list_path))
    try:
        lines = reading.read_regular_file(list_path).decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError, reading.FileRefused) as error:
        raise DatasetError(f"{visible(list_path)}: cannot read the list file ({error})") from error
    paths, labels = [], []
    for line_number, line in enumerate(lines, start=1):
        text = line.strip()
        if text and not text.startswith("#"):
            path, label = _list_entry(text, f"{list_path}:{line_number}", spec)
            paths.append(os.path.join(base, path))
            labels.append(label)
    if not paths:
        raise DatasetError(f"{list_path} lists no images; write one `PATH LABEL` line per image")
    return _read_labelled(paths, labels, "list", list_path, max_pixels, spec)


def read_images(paths, max_pixels: int = preprocessing.DEFAULT_MAX_PIXELS,
                max_file_bytes: int = reading.DEFAULT_MAX_FILE_BYTES, spec: ModelSpec = FASHION_MNIST) -> ImageFiles:
    """Reads each file through spec's preprocessing recipe; a file that cannot be read or decoded, or is not a regular
    file of at most max_file_bytes, costs only itself."""
    images, read, unreadable = [], [], []
    for path in paths:
        failure = None
        try:
            data = reading.read_regular_file(path, max_file_bytes)
            images.append(recipes.to_model_input(spec, data, max_pixels))
        except preprocessing.ImageDecodeError as error:
            failure = Unreadable(path, error.reason, str(error))  # the message starts with the reason already
        except reading.FileRefused as refused:
            failure = Unreadable(path, refused.reason, f"{refused.reason}: {refused}")
        except OSError as error:
            failure = Unreadable(path, "cannot read", f"cannot read: {error.strerror or error}")
        if failure:
            unreadable.append(failure)
        read.append(failure is None)
    stacked = np.stack(images) if images else np.empty((0,) + spec.pixel_shape, dtype=np.uint8)
    return ImageFiles(stacked, np.array(read, dtype=bool), tuple(unreadable))


def skipped_summary(unreadable, total: int) -> str:
    """`skipped 3 of 120 files: 2 not an image, 1 truncated (first: PATH: MESSAGE)`."""
    counts = collections.Counter(item.reason for item in unreadable)
    reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(counts.items()))
    first = unreadable[0]
    return (f"skipped {len(unreadable)} of {total} files: {reasons} "
            f"(first: {shortened(first.path)}: {visible(first.message)})")


def report_skipped(sets, stream=None) -> None:
    """Prints a line for each set that had files left out (to stderr unless told), so no skipped file goes unsaid."""
    for labelled in sets:
        if labelled.skipped:
            total = len(labelled.labels) + len(labelled.skipped)
            print(f"{visible(labelled.location)}: {skipped_summary(labelled.skipped, total)}",
                  file=stream or sys.stderr)


def add_arguments(parser, role: str, dataset: bool = True) -> None:
    """Adds the flags that choose a CLI's labelled images: --ROLE-dir and --ROLE-list, and with dataset --data-dir and
    --no-fashion-mnist. Their values are args.folders and args.lists; without dataset, args.ROLE_folders and
    args.ROLE_lists (a CLI's second set, e.g. held-out images to measure a trained model on)."""
    prefix = "" if dataset else f"{role}_"
    if dataset:
        parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="folder with the four Fashion-MNIST IDX files")
    parser.add_argument(f"--{role}-dir", dest=f"{prefix}folders", action="append", default=[], metavar="DIR",
                        help=f"{'your own' if dataset else 'held-out'} images: one sub-folder per class, named after "
                             "it (in Fashion-MNIST's names '/' is written '-', e.g. T-shirt-top) or by its index; may "
                             "be given more than once")
    parser.add_argument(f"--{role}-list", dest=f"{prefix}lists", action="append", default=[], metavar="FILE",
                        help=f"{'your own' if dataset else 'held-out'} images, one `PATH LABEL` line each (label: "
                             "class name or index; a relative path is relative to the list file); may be given more "
                             "than once")
    if dataset:
        parser.add_argument("--no-fashion-mnist", dest="fashion_mnist", action="store_false",
                            help=f"use only the --{role}-dir and --{role}-list images, not Fashion-MNIST")


def check_arguments(parser, args, role: str) -> None:
    """Stops with a usage error when the flags leave no images to use."""
    if not args.fashion_mnist and not (args.folders or args.lists):
        parser.error(f"--no-fashion-mnist needs --{role}-dir or --{role}-list with your own images")


def _read_labelled(paths: list, labels: list, origin: str, location: str, max_pixels: int,
                   spec: ModelSpec) -> LabelledImages:
    files = read_images(paths, max_pixels, spec=spec)
    if not files.read.any():
        raise DatasetError(f"{location}: no usable images; {skipped_summary(files.unreadable, len(paths))}")
    kept = tuple(path for path, read in zip(paths, files.read) if read)
    return LabelledImages(files.images, np.array(labels, dtype=np.int64)[files.read], kept, origin, location,
                          files.unreadable)


def _label(text: str, where: str, spec: ModelSpec, hint: str = "") -> int:
    try:
        return class_index(text, spec.class_names)
    except ValueError as error:
        raise DatasetError(f"{visible(where)}: {error}{hint}") from None


def _list_entry(text: str, where: str, spec: ModelSpec) -> tuple:
    """`photos/a b.jpg Ankle boot` -> ("photos/a b.jpg", 9): the label is the last word, or the last words where
    together they name a class."""
    for count in range(max(len(name.split()) for name in spec.class_names), 1, -1):
        path, *words = text.rsplit(maxsplit=count)
        if len(words) == count:
            try:
                return path, class_index(" ".join(words), spec.class_names)
            except ValueError:
                pass  # not a several-word class name: the label is the last word alone
    path, *words = text.rsplit(maxsplit=1)
    if not words:
        raise DatasetError(f"{visible(where)}: expected `PATH LABEL`, got {shortened(repr(text))}")
    return path, _label(words[0], where, spec)


def _files_below(folder: str) -> list:
    """Every entry below a folder that is not a folder, except hidden ones (.DS_Store and the like), in the order
    os.walk sorted by folder gives. Entries are told apart by the folder listing alone, without opening any, and a link
    to a folder is not followed: it is listed, and reading it refuses it, as it refuses a FIFO or a device."""
    found = []
    pending = [folder]
    while pending:
        directory = pending.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
        except OSError:
            continue  # as os.walk does: a folder that cannot be listed has nothing to give
        found.append((directory, [entry.path for entry in entries if not entry.is_dir(follow_symlinks=False)
                                  and not entry.name.startswith(".")]))
        pending += [entry.path for entry in entries if entry.is_dir(follow_symlinks=False)]
    return [path for _, paths in sorted(found) for path in paths]
