"""Serves an ONNX model with onnxruntime: one session per process, its threads set as TensorFlow's are, on CUDA where
the GPU install has it and on the CPU otherwise; the card's input scaling, mean and std and the model's layout are
applied in numpy before each fixed-row call, and a softmax after it for a model that gives logits."""

import dataclasses

import numpy as np

from model.cards.model_checks import ModelFileError
from model.display import shortened, visible
from model.runtimes import onnx_checks

PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")  # in order of preference, where installed


class OnnxModel:
    """A checked ONNX model and its onnxruntime session (made when first needed, once; the checked bytes are let go
    then, since the session holds its own copy of the model)."""

    def __init__(self, checked: onnx_checks.CheckedOnnx, path: str, threads: int = 0):
        self.checked, self.path, self.threads = checked, path, threads
        self._session = None

    @property
    def session(self):
        if self._session is None:
            self._session = new_session(self.checked, self.path, self.threads)
            self.checked = dataclasses.replace(self.checked, data=b"")
        return self._session

    def device(self) -> str:
        """'GPU:0 (onnxruntime, CUDA)' where the session runs on CUDA, else 'CPU'."""
        return "GPU:0 (onnxruntime, CUDA)" if self.session.get_providers()[0] == PROVIDERS[0] else "CPU"


def runtime_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def new_session(checked: onnx_checks.CheckedOnnx, path: str, threads: int = 0):
    """An onnxruntime session of the checked bytes (external data already inlined: it opens no file), with `threads`
    threads for the model (0: onnxruntime's default, one per core) and operators run one at a time."""
    ort = onnx_checks.import_onnx(path, "onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: its warnings are not the user's business
    available = ort.get_available_providers()
    try:
        return ort.InferenceSession(checked.data, sess_options=options,
                                    providers=[name for name in PROVIDERS if name in available])
    except Exception as error:  # onnxruntime raises its own exception types for a model it cannot run
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise ModelFileError(f"{visible(path)}: onnxruntime {ort.__version__} cannot run the model "
                             f"({shortened(first_line, 300)})") from None


def model_input(block: np.ndarray, spec, input_type: str) -> np.ndarray:
    """Fixed-row uint8 pixels (rows, H, W[, C]) -> the model's input: scaled to the card's input range, then
    (x - mean) / std per channel, in the card's layout and the model's input type."""
    height, width, channels = spec.input_shape
    inputs = block.reshape((len(block), height, width, channels))
    if input_type != "uint8":
        inputs = inputs.astype(np.float32)
        if spec.input_range == "unit":
            inputs = inputs / np.float32(255.0)
        elif spec.input_range == "symmetric":
            inputs = inputs / np.float32(127.5) - np.float32(1.0)
        if spec.mean:
            inputs = (inputs - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    if spec.layout == "nchw":
        inputs = inputs.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(inputs, dtype=np.dtype(input_type))


def softmax(values: np.ndarray) -> np.ndarray:
    shifted = np.exp(values - values.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def forward(model: OnnxModel, spec):
    """One fixed block of uint8 pixels -> float32 probabilities, as the scorer calls the model."""
    session, checked = model.session, model.checked
    names = [checked.output_name]

    def call(block: np.ndarray) -> np.ndarray:
        outputs = session.run(names, {checked.input_name: model_input(block, spec, checked.input_type)})[0]
        outputs = outputs.astype(np.float32, copy=False)
        return softmax(outputs) if spec.outputs == "logits" else outputs

    return call
