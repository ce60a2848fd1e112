"""What every runtime of ONNX files shares: the checks before it sees a file (onnx_checks), what a card records of
the model, and how the model is fed: fixed-row uint8 pixels scaled, normalised and laid out as the card says and the
model takes them, and a softmax for a model that gives logits."""

import numpy as np

from model.runtimes import onnx_checks, registry


class OnnxFileRuntime(registry.Runtime):
    """A runtime of .onnx files: each loads the bytes onnx_checks passed (external data inlined), so it opens no file
    the model names. Subclasses set name, package, install_hint and implement load, owns, forward."""

    framework = "onnx"
    suffixes = (onnx_checks.EXTENSION,)
    also_needs = ("onnx",)

    def check(self, path: str, spec):
        return onnx_checks.check_against(path, spec)

    def content_sha256(self, model) -> str:
        return model.checked.content_sha256

    def describe(self, model) -> dict:
        return {"content_sha256": model.checked.content_sha256, "parameter_count": model.checked.parameter_count,
                f"{self.name}_version": self.version(), "onnx_opset": model.checked.opset,
                "onnx_input_type": model.checked.input_type}

    def output_width(self, model):
        return model.checked.output_width


def model_input(block: np.ndarray, spec, checked) -> np.ndarray:
    """Fixed-row uint8 pixels (rows, H, W[, C]) -> the input of the checked model (onnx_checks.CheckedOnnx): scaled
    to the card's input range, then (x - mean) / std per channel, in the card's layout (nchw moves the channels
    first; flat rows are H*W*C long, row-major, channels last) and the model's input type."""
    height, width, channels = spec.input_shape
    inputs = block.reshape((len(block), height, width, channels))
    if checked.input_type != "uint8":
        inputs = inputs.astype(np.float32)
        if spec.input_range == "unit":
            inputs = inputs / np.float32(255.0)
        elif spec.input_range == "symmetric":
            inputs = inputs / np.float32(127.5) - np.float32(1.0)
        if spec.mean:
            inputs = (inputs - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    if spec.layout == "nchw":
        inputs = inputs.transpose(0, 3, 1, 2)
    inputs = inputs.reshape((len(block),) + tuple(checked.input_dims[1:]))  # [batch, H, W] grey, or flat rows
    return np.ascontiguousarray(inputs, dtype=np.dtype(checked.input_type))


def probabilities(outputs: np.ndarray, spec) -> np.ndarray:
    """The model's outputs as float32 probabilities: a softmax after logits."""
    outputs = np.asarray(outputs).astype(np.float32, copy=False)
    if spec.outputs != "logits":
        return outputs
    shifted = np.exp(outputs - outputs.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)
