"""Serves an ONNX model with onnxruntime: one session per process, made from the checked bytes (onnx_checks: every
external tensor inlined, so onnxruntime opens no file), on CUDA where the GPU install has it and on the CPU otherwise,
its threads set as TensorFlow's are and not spinning while idle (they would spin against the threads that decode the
next block); the card's scaling, normalisation and layout applied in numpy (onnx_feed)."""

import dataclasses

from model.cards.model_checks import ModelFileError
from model.display import shortened, visible
from model.runtimes import onnx_checks, onnx_feed

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


class OnnxRuntime(onnx_feed.OnnxFileRuntime):
    name = "onnxruntime"
    package = "onnxruntime"
    install_hint = onnx_checks.INSTALL_HINT

    def load(self, checked, path: str, threads: int = 0, precision: str = "f32"):
        model = OnnxModel(checked, path, threads)
        model.session  # noqa: B018 - made now: onnxruntime's refusal is a ModelFileError at load, not at the first input
        return model

    def owns(self, model) -> bool:
        return isinstance(model, OnnxModel)

    def forward(self, model, spec):
        session, checked = model.session, model.checked
        names = [checked.output_name]

        def call(block):
            outputs = session.run(names, {checked.input_name: onnx_feed.model_input(block, spec, checked)})[0]
            return onnx_feed.probabilities(onnx_checks.output_array(outputs, checked), spec)

        return call

    def device(self, model) -> str:
        """'GPU:0 (onnxruntime, CUDA)' where the session runs on CUDA, else 'CPU'."""
        return "GPU:0 (onnxruntime, CUDA)" if model.session.get_providers()[0] == PROVIDERS[0] else "CPU"


def new_session(checked: onnx_checks.CheckedOnnx, path: str, threads: int = 0):
    """An onnxruntime session of the checked bytes, with `threads` threads for the model (0: onnxruntime's default,
    one per core), operators run one at a time, and threads that sleep rather than spin between calls."""
    ort = onnx_checks.import_onnx(path, "onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Spinning threads keep their cores busy for a while after each call, against the decode threads that prepare
    # the next block (docs/performance.md measures it).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: its warnings are not the user's business
    available = ort.get_available_providers()
    try:
        return ort.InferenceSession(checked.data, sess_options=options,
                                    providers=[name for name in PROVIDERS if name in available])
    except Exception as error:  # onnxruntime raises its own exception types for a model it cannot run
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise ModelFileError(f"{visible(path)}: onnxruntime {ort.__version__} cannot run the model "
                             f"({shortened(first_line, 300)})") from None


RUNTIME = OnnxRuntime()
