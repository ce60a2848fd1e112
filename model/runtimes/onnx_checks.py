"""Checks an ONNX model file before onnxruntime sees any of it: a regular file within the size cap that parses as ONNX,
its external data only from files inside the model's own folder and within the cap, only the standard operator
domains, an opset this code and onnxruntime run, one image input (rank 4, a grey [batch, H, W], or flat rows) and
an output of [batch, classes] (or a ZipMap's maps); then the ONNX checker on the whole model. What passes is handed
to a runtime as bytes with every external tensor inlined, so the runtime itself never opens a file the model names.
"""

import hashlib
import os
from dataclasses import dataclass

from model import reading
from model.cards.model_checks import MAX_MODEL_BYTES, ModelFileError, read_model_file_bytes
from model.display import shortened, visible

EXTENSION = ".onnx"
INSTALL_HINT = "pip install '.[onnx]' (it adds onnxruntime and onnx)"
# Operator domains of the ONNX standard. Anything else names custom operators, which onnxruntime runs only from a
# library registered with it: never done here, and refused before it could matter.
STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")
# TensorProto element types the image input may have, and what numpy calls them.
INPUT_TYPES = {1: "float32", 10: "float16", 2: "uint8"}
OUTPUT_TYPES = {1: "float32", 10: "float16", 11: "float64"}
LAYOUTS = ("nhwc", "nchw")  # of a rank-4 input; a rank-2 input is "flat"


@dataclass(frozen=True)
class CheckedOnnx:
    """An ONNX model that passed every check: the bytes to give onnxruntime (external data inlined) and what it takes
    and gives."""

    data: bytes
    content_sha256: str
    input_name: str
    input_dims: tuple  # [batch, ...] with None where a dimension is free
    input_type: str  # float32, float16 or uint8
    output_name: str
    output_width: int
    opset: int
    parameter_count: int  # values in the model's initializers
    zipmap_keys: tuple = ()  # for an output that is a sequence of maps (skl2onnx's ZipMap): its keys, in class order


def import_onnx(path: str, package: str = "onnx"):
    """The onnx package (or onnxruntime), or ModelFileError saying what to install to load the model at `path`."""
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError:
        raise ModelFileError(f"{visible(path)} is an ONNX model, and this install has no {package}: "
                             f"{INSTALL_HINT}") from None


def check_file(path: str, output_name: str = None, max_bytes: int = MAX_MODEL_BYTES) -> CheckedOnnx:
    """Reads and checks `path` (see the module), its scores read from `output_name` (None: the one output that can
    hold them); raises ModelFileError saying what is wrong."""
    if not str(path).endswith(EXTENSION):
        raise ModelFileError(f"{visible(str(path))}: an ONNX model's file name must end in {EXTENSION}")
    data = _read(path, max_bytes, "model file", None)
    onnx = import_onnx(path)
    try:
        model = onnx.load_model_from_string(data)  # parses only: external data stays where it is named
    except Exception as error:  # protobuf's DecodeError and friends: not a whole ONNX file
        raise ModelFileError(f"{visible(path)} is not a whole ONNX model ({type(error).__name__}: "
                             f"{shortened(str(error), 200)}); it may be cut short") from None
    if not model.HasField("graph") or not model.graph.node:
        raise ModelFileError(f"{visible(path)} is not an ONNX model (it holds no graph)")
    opset = _checked_domains(model, path)
    digest = hashlib.sha256(data)
    _inline_external_data(model, path, digest, max_bytes - len(data))
    try:
        onnx.checker.check_model(model)
    except Exception as error:  # onnx.checker.ValidationError, or anything its C++ side raises
        raise ModelFileError(f"{visible(path)}: the ONNX checker refuses it "
                             f"({shortened((str(error).strip().splitlines() or [''])[0], 300)})") from None
    inputs, outputs = _image_input(model, path), _scores_output(model, path, output_name)
    parameters = sum(_count(tensor.dims) for graph in _graphs(model) for tensor in graph.initializer)
    return CheckedOnnx(data=model.SerializeToString(), content_sha256=digest.hexdigest(), input_name=inputs[0],
                       input_dims=inputs[1], input_type=inputs[2], output_name=outputs[0], output_width=outputs[1],
                       opset=opset, parameter_count=parameters, zipmap_keys=outputs[2])


def check_against(path: str, spec) -> CheckedOnnx:
    """The checked model at `path` (check_file), refused unless it takes the input `spec` (a card_spec.ModelSpec)
    describes and gives its classes (mismatches)."""
    checked = check_file(path, spec.output_name)
    problems = []
    try:
        geometry, _ = image_geometry(checked, spec.layout, spec.input_shape)
        if geometry != spec.input_shape:
            problems.append(f"input {list(geometry)} (H, W, C), the card says {list(spec.input_shape)}")
    except ValueError as error:
        problems.append(str(error))
    problems += mismatches(checked, spec)
    if problems:
        raise ModelFileError(f"{visible(path)}: " + "; ".join(problems))
    return checked


def output_array(outputs, checked: CheckedOnnx):
    """What a runtime gave for the scores output, as a [batch, N] array: a ZipMap's maps read in class order."""
    import numpy as np

    if not checked.zipmap_keys:
        return outputs
    return np.array([[row[key] for key in checked.zipmap_keys] for row in outputs], dtype=np.float32)


def mismatches(checked: CheckedOnnx, spec) -> list:
    """What keeps the checked model from being served as `spec` (a card_spec.ModelSpec) says: its batch dimension,
    its number of outputs, and an input type the card's scaling cannot feed."""
    problems = []
    batch = checked.input_dims[0]
    if batch is not None and batch != spec.model_call_rows:
        name = checked.input_name
        problems.append(f"its input {shortened(repr(name), 60)} takes batches of exactly {batch}, and the scorer "
                        f"calls it with {spec.model_call_rows} rows: export it with a free batch dimension (PyTorch: "
                        "torch.onnx.export(model, (example,), path, dynamo=True, dynamic_shapes=({0: "
                        "torch.export.Dim('batch')},)); skl2onnx: initial_types=[(" + repr(name) +
                        ", FloatTensorType([None, width]))])")
    if checked.output_width != spec.num_classes:
        problems.append(f"it gives {checked.output_width} values per image, and the card names {spec.num_classes} "
                        "classes")
    if checked.input_type == "uint8" and (spec.input_range != "uint8" or spec.mean):
        problems.append("its input is uint8, so it takes the pixels as they are: card it with --input-range uint8 "
                        "and no --mean or --std")
    return problems


def _read(path: str, limit: int, what: str, inside) -> bytes:
    return read_model_file_bytes(path, limit, what, "", inside)


def _graphs(model):
    """Every graph of the model: the main one, and each If/Loop/Scan body in it and in its functions."""
    pending = [model.graph, *_subgraphs(node for function in model.functions for node in function.node)]
    while pending:
        graph = pending.pop()
        yield graph
        pending.extend(_subgraphs(graph.node))


def _subgraphs(nodes):
    for node in nodes:
        for attribute in node.attribute:
            if attribute.HasField("g"):
                yield attribute.g
            yield from attribute.graphs


def _nodes(model):
    """Every node: of each graph (_graphs), and of the model's functions."""
    yield from (node for function in model.functions for node in function.node)
    for graph in _graphs(model):
        yield from graph.node


def _checked_domains(model, path: str) -> int:
    """The model's ONNX opset; refuses custom operator domains and opsets newer than this onnx package knows."""
    import onnx

    domains = {entry.domain: entry.version for entry in model.opset_import}
    named = set(domains) | {node.domain for node in _nodes(model)} | {f.domain for f in model.functions}
    custom = sorted(domain for domain in named if domain not in STANDARD_DOMAINS)
    if custom:
        raise ModelFileError(f"{visible(path)}: refused, it uses operators of the domain "
                             f"{shortened(repr(custom[0]), 80)} (only the ONNX standard's operators are run; custom "
                             "operators are never loaded)")
    opset = domains.get("", domains.get("ai.onnx"))
    newest = onnx.defs.onnx_opset_version()
    if opset is None or not 1 <= opset <= newest:
        raise ModelFileError(f"{visible(path)}: its ONNX opset is {opset}; this install runs opsets up to {newest} "
                             "(export with an older opset, e.g. torch.onnx.export(..., opset_version=17))")
    return opset


def _tensors(model):
    """Every TensorProto the model holds: initializers (and sparse ones) in every graph, and the tensor attributes
    of every node."""
    for graph in _graphs(model):
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
            yield sparse.indices
    for node in _nodes(model):
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors


def _inline_external_data(model, path: str, digest, budget: int) -> None:
    """Reads each external tensor's bytes from a file inside the model's folder (named relatively, no `..`, no link
    leading out), within `budget` bytes in all, into the tensor itself; hashes what it read into `digest`."""
    import onnx

    folder = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    files = {}
    for tensor in _tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = _checked_location(tensor, path)
        where = _naming(tensor, path)
        target = os.path.join(folder, location)
        if not reading.lies_inside(os.path.realpath(target), (folder,)):
            raise ModelFileError(f"{where}, a link that leads outside the model's folder")
        claimed = _claimed_bytes(tensor)
        try:
            offset, length = int(info.get("offset", 0)), int(info.get("length", claimed))
        except ValueError:
            raise ModelFileError(f"{where} at an offset or length that is not a whole number") from None
        if offset < 0 or max(length, claimed) > budget:
            raise ModelFileError(f"{where} of {max(length, claimed):,} bytes: more than the {MAX_MODEL_BYTES:,} bytes "
                                 "a model may hold in all")
        if length != claimed:
            raise ModelFileError(f"{where} of {length:,} bytes, and its shape and type need {claimed:,}")
        if location not in files:
            files[location] = _read(target, budget, "external data", (folder,))
        chunk = files[location][offset:offset + length]
        if len(chunk) != length:
            raise ModelFileError(f"{where}, {length:,} bytes at offset {offset:,}, past the end of the file "
                                 f"({len(files[location]):,} bytes); it may be cut short")
        budget -= length
        digest.update(f"|{location}|{offset}|{length}|".encode())
        digest.update(chunk)
        tensor.raw_data = chunk
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT


def external_locations(path: str, max_bytes: int = MAX_MODEL_BYTES) -> list:
    """The files, relative to the model's folder, that the ONNX model at `path` names for its external data (each
    checked as check_file checks it: named relatively, no `..`); for copying a model from a bucket with them."""
    import onnx

    data = _read(path, max_bytes, "model file", None)
    import_onnx(path)
    try:
        model = onnx.load_model_from_string(data)
    except Exception as error:
        raise ModelFileError(f"{visible(path)} is not a whole ONNX model ({type(error).__name__}); it may be cut "
                             "short") from None
    return sorted({_checked_location(tensor, path) for tensor in _tensors(model)
                   if tensor.data_location == onnx.TensorProto.EXTERNAL})


def _naming(tensor, path: str) -> str:
    location = next((entry.value for entry in tensor.external_data if entry.key == "location"), "")
    return f"{visible(path)}: refused, tensor {shortened(repr(tensor.name), 60)} names external data " \
           f"{shortened(repr(location), 80)}"


def _checked_location(tensor, path: str) -> str:
    """The external tensor's file name, refused unless it names a file inside the model's folder, relatively."""
    location = next((entry.value for entry in tensor.external_data if entry.key == "location"), "")
    parts = location.replace("\\", "/").split("/")
    if not location or os.path.isabs(location) or location.startswith(("/", "\\")) or ".." in parts \
            or ":" in parts[0] or "\0" in location:
        raise ModelFileError(f"{_naming(tensor, path)}, which is not a file inside the model's folder (external "
                             "data must sit beside the model, named relatively)")
    return location


def _claimed_bytes(tensor) -> int:
    """What a tensor's dimensions and type say it holds, in bytes."""
    import onnx

    try:
        size = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, ValueError, TypeError):
        raise ModelFileError(f"tensor {shortened(repr(tensor.name), 60)} has no fixed-size type "
                             f"({tensor.data_type}) and cannot be held as external data") from None
    return _count(tensor.dims) * size


def _count(dims) -> int:
    count = 1
    for edge in dims:
        count *= max(int(edge), 0)
    return count


def _dims(value) -> list:
    shape = value.type.tensor_type.shape
    return [edge.dim_value if edge.HasField("dim_value") else None for edge in shape.dim] \
        if value.type.tensor_type.HasField("shape") else None


def _image_input(model, path: str) -> tuple:
    """(name, dims, type) of the model's one image input, refused unless of rank 2 (flat rows), 3 ([batch, H, W],
    grey) or 4, and float32, float16 or uint8."""
    given = {tensor.name for tensor in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in given]  # IR < 4 lists initializers too
    if len(inputs) != 1:
        names = ", ".join(shortened(repr(value.name), 40) for value in inputs[:4])
        raise ModelFileError(f"{visible(path)}: the model has {len(inputs)} inputs ({names}); the scorer feeds one "
                             "image batch ([batch, C, H, W], [batch, H, W, C], or flat rows [batch, H*W*C]): export "
                             "the model with one input")
    value = inputs[0]
    dims, kind = _dims(value), INPUT_TYPES.get(value.type.tensor_type.elem_type)
    if kind is None or dims is None or len(dims) not in (2, 3, 4):
        raise ModelFileError(f"{visible(path)}: the model's input {shortened(repr(value.name), 60)} is "
                             f"{_described(value)}; the scorer feeds one image batch ([batch, C, H, W], "
                             f"[batch, H, W, C], or flat rows [batch, H*W*C]) of {', '.join(INPUT_TYPES.values())}: "
                             "export the model with such an input")
    return value.name, tuple(dims), kind


def _scores_output(model, path: str, output_name: str = None) -> tuple:
    """(name, width, ZipMap keys) of the output that holds the scores: `output_name`, or else the one output that is
    [batch, N] floats with N fixed, or else a ZipMap's sequence of maps (skl2onnx's default). Refused with what to do
    where none fits or several do."""
    outputs = list(model.graph.output)
    named = ", ".join(shortened(repr(value.name), 40) for value in outputs[:6])
    if output_name is not None:
        chosen = [value for value in outputs if value.name == output_name]
        if not chosen:
            raise ModelFileError(f"{visible(path)}: the model has no output {shortened(repr(output_name), 60)}; its "
                                 f"outputs are {named}")
        candidates = chosen
    else:
        candidates = [value for value in outputs if _scores_width(value)] or \
            [value for value in outputs if _zipmap_keys(model, value.name)]
    if len(candidates) > 1:
        raise ModelFileError(f"{visible(path)}: the model's outputs {named} could each be the scores; name the one "
                             "that gives one value per class with --output-name")
    if not candidates:
        shown = "; ".join(f"{shortened(repr(value.name), 40)} is {_described(value)}" for value in outputs[:6])
        raise ModelFileError(f"{visible(path)}: no output of the model is [batch, classes] floats, one value per "
                             f"class ({shown}); export it with such an output (skl2onnx: options={{id(model): "
                             "{'zipmap': False}}; PyTorch: return the logits or probabilities tensor)")
    value = candidates[0]
    width = _scores_width(value)
    if width:
        return value.name, width, ()
    keys = _zipmap_keys(model, value.name)
    if keys is None:
        raise ModelFileError(f"{visible(path)}: the model's output {shortened(repr(value.name), 60)} is "
                             f"{_described(value)}; the scorer reads [batch, classes] of floats, one value per class")
    return value.name, len(keys), keys


def _scores_width(value) -> int:
    """N for an output of [batch, N] floats with N fixed, else 0."""
    dims = _dims(value)
    fits = value.type.HasField("tensor_type") and value.type.tensor_type.elem_type in OUTPUT_TYPES
    return dims[1] if fits and dims is not None and len(dims) == 2 and dims[1] else 0


def _zipmap_keys(model, name: str):
    """The class keys, in order, of the ZipMap node (ONNX-ML) that makes output `name`, or None."""
    for node in model.graph.node:
        if node.op_type == "ZipMap" and node.domain == "ai.onnx.ml" and name in node.output:
            for attribute in node.attribute:
                if attribute.name == "classlabels_int64s" and attribute.ints:
                    return tuple(int(key) for key in attribute.ints)
                if attribute.name == "classlabels_strings" and attribute.strings:
                    return tuple(key.decode("utf-8", "replace") for key in attribute.strings)
    return None


def _described(value) -> str:
    import onnx

    dims = _dims(value)
    kind = onnx.TensorProto.DataType.Name(value.type.tensor_type.elem_type) if value.type.HasField("tensor_type") \
        else "not a tensor"
    shown = "unknown shape" if dims is None else "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"
    return f"{shown} of {kind.lower()}"


def image_geometry(checked: CheckedOnnx, layout: str = None, input_shape: tuple = None) -> tuple:
    """((H, W, C), layout) of the model's input: read from its shape where that is unambiguous ([batch, C, H, W] or
    [batch, H, W, C] with C 1 or 3; [batch, H, W] grey), else decided by `layout`; flat rows [batch, N] take their
    (H, W, C) from `input_shape` (layout "flat"). Raises ValueError saying what to pass."""
    shape = "[" + ", ".join("?" if d is None else str(d) for d in checked.input_dims) + "]"
    if len(checked.input_dims) == 2:
        width = checked.input_dims[1]
        if layout not in (None, "flat") or input_shape is None:
            raise ValueError(f"the model's input {shape} takes flat rows: pass --layout flat and --input-shape HxWxC "
                             "(H*W*C values a row, row-major, channels last; e.g. 8x8x1 for scikit-learn's digits)")
        height, image_width, channels = input_shape
        if height * image_width * channels != width:
            raise ValueError(f"the model's input {shape} takes rows of {width} values, and --input-shape "
                             f"{height}x{image_width}x{channels} makes {height * image_width * channels}")
        return tuple(input_shape), "flat"
    if layout == "flat":
        raise ValueError(f"the model's input {shape} is not flat rows [batch, N]; leave out --layout flat")
    if len(checked.input_dims) == 3:
        _, height, width = checked.input_dims
        if not height or not width or layout == "nchw":
            raise ValueError(f"the model's input {shape} is not a grey image batch [batch, H, W] with fixed H and W")
        return (height, width, 1), "nhwc"
    _, first, second, last = checked.input_dims
    fits = {"nchw": first in (1, 3) and bool(second) and bool(last),
            "nhwc": last in (1, 3) and bool(first) and bool(second)}
    if layout is None:
        matching = [name for name in LAYOUTS if fits[name]]
        if len(matching) != 1:
            raise ValueError(f"the model's input {shape} does not say where its channels are: pass --layout nchw "
                             "([batch, C, H, W]) or --layout nhwc ([batch, H, W, C])" if matching else
                             f"the model's input {shape} is not an image batch [batch, C, H, W] or [batch, H, W, C] "
                             "with fixed H and W and C 1 (grey) or 3 (RGB)")
        layout = matching[0]
    elif not fits[layout]:
        raise ValueError(f"the model's input {shape} is not [batch, {'C, H, W' if layout == 'nchw' else 'H, W, C'}] "
                         f"with fixed H and W and C 1 or 3, as --layout {layout} says")
    height, width, channels = (second, last, first) if layout == "nchw" else (first, second, last)
    return (height, width, channels), layout
