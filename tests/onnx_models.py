"""ONNX models the tests build with onnx.helper, as another framework would export them: a colour NCHW convolutional
net that takes ImageNet-normalised input and gives logits, and a grey NHWC one that takes uint8 pixels and gives
probabilities; plus hostile variants of them."""

import os

import numpy as np

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IR_VERSION, OPSET = 9, 17  # what torch.onnx.export writes by default these days; every onnxruntime here runs it


def _onnx():
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    return onnx, TensorProto, helper, numpy_helper


def colour_nchw_logits(classes: int = 4, side: int = 32, seed: int = 0, batch="batch", extra_input: bool = False,
                       output_width: int = None):
    """Conv 3x3 (8) -> ReLU -> global average pool -> flatten -> Gemm: logits [batch, classes], input
    float32 [batch, 3, side, side]."""
    onnx, TensorProto, helper, numpy_helper = _onnx()
    rng = np.random.default_rng(seed)
    width = output_width or classes
    weights = {"conv_w": rng.normal(0, 0.5, (8, 3, 3, 3)), "conv_b": rng.normal(0, 0.1, 8),
               "fc_w": rng.normal(0, 4.0, (8, width))}
    # Centred on what the pooled features average on tinted catalogue photos (measured with seed 0), so that the
    # photos land in different classes rather than all in one.
    weights["fc_b"] = -np.array([0.08, 9.01, 3.83, 0.24, 0.28, 0.10, 2.52, 0.16]) @ weights["fc_w"]
    nodes = [helper.make_node("Conv", ["pixels", "conv_w", "conv_b"], ["conv"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv"], ["relu"]),
             helper.make_node("GlobalAveragePool", ["relu"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"]),
             helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"])]
    inputs = [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [batch, 3, side, side])]
    if extra_input:
        inputs.append(helper.make_tensor_value_info("scale", TensorProto.FLOAT, [1]))
    graph = helper.make_graph(nodes, "colour_nchw_logits", inputs,
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, width])],
                              initializer=[numpy_helper.from_array(value.astype(np.float32), name)
                                           for name, value in weights.items()])
    return _model(graph)


def grey_nhwc_uint8(classes: int = 10, side: int = 28, seed: int = 1):
    """uint8 [batch, side, side, 1] -> cast, /255 -> flatten -> Gemm -> softmax: probabilities [batch, classes]."""
    onnx, TensorProto, helper, numpy_helper = _onnx()
    rng = np.random.default_rng(seed)
    values = {"w": rng.normal(0, 0.05, (side * side, classes)).astype(np.float32),
              "b": rng.normal(0, 0.1, classes).astype(np.float32), "scale": np.array(255.0, np.float32),
              "flat_shape": np.array([-1, side * side], np.int64)}
    nodes = [helper.make_node("Cast", ["image"], ["floats"], to=TensorProto.FLOAT),
             helper.make_node("Div", ["floats", "scale"], ["unit"]),
             helper.make_node("Reshape", ["unit", "flat_shape"], ["flat"]),
             helper.make_node("Gemm", ["flat", "w", "b"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)]
    graph = helper.make_graph(nodes, "grey_nhwc_uint8",
                              [helper.make_tensor_value_info("image", TensorProto.UINT8, ["n", side, side, 1])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["n", classes])],
                              initializer=[numpy_helper.from_array(value, name) for name, value in values.items()])
    return _model(graph)


def _model(graph, domains=(("", OPSET),)):
    onnx, _, helper, _ = _onnx()
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(name, version) for name, version in domains])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def save(model, path: str, external: str = None) -> str:
    """Writes the model; with `external`, every initializer goes to that file beside it (as big exports do)."""
    import onnx

    if external:
        onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location=external,
                        size_threshold=0)
    else:
        onnx.save_model(model, path)
    return path


def with_external_location(model, location: str, folder: str, data: bytes = None):
    """The model with every initializer stored as external data at `location` (written into `folder` unless `data` is
    None and the file should not exist), laid end to end."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    offset, blob = 0, b""
    for tensor in copy.graph.initializer:
        raw = onnx.numpy_helper.to_array(tensor).tobytes()
        tensor.ClearField("float_data")
        tensor.ClearField("int64_data")
        tensor.ClearField("raw_data")
        tensor.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", str(offset)), ("length", str(len(raw)))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        offset += len(raw)
        blob += raw
    if data is not None:
        with open(os.path.join(folder, location), "wb") as stream:
            stream.write(data if data else blob)
    return copy, blob


def run_directly(path: str, pixels: np.ndarray, mean=None, std=None, scale: float = 1 / 255, layout: str = "nchw",
                 input_type=np.float32) -> np.ndarray:
    """What onnxruntime gives for uint8 pixels (N, H, W[, C]) fed as a user would: scaled, normalised, laid out,
    without the scorer's code."""
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    values = pixels if pixels.ndim == 4 else pixels[..., None]
    if input_type != np.uint8:
        values = values.astype(np.float32) * np.float32(scale)
        if mean is not None:
            values = (values - np.array(mean, np.float32)) / np.array(std, np.float32)
    if layout == "nchw":
        values = np.transpose(values, (0, 3, 1, 2))
    return session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(values, dtype=input_type)})[0]


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
