"""Serves an ONNX model with OpenVINO on the CPU (`pip install '.[openvino]'`): the same checked bytes onnxruntime gets
(onnx_checks: every external tensor inlined, so OpenVINO opens no file), compiled at float32 unless the card asks for
bfloat16 (OpenVINO would otherwise pick bfloat16 by itself on a CPU that has it, and answer to about 1e-2), with its
threads set as TensorFlow's are; the card's scaling, normalisation and layout applied in numpy (onnx_feed)."""

import dataclasses

from model.cards.model_checks import ModelFileError
from model.display import shortened, visible
from model.runtimes import onnx_checks, onnx_feed

PRECISIONS = {"f32": "f32", "bf16": "bf16"}  # the card's name -> OpenVINO's INFERENCE_PRECISION_HINT


@dataclasses.dataclass
class OpenVinoModel:
    checked: onnx_checks.CheckedOnnx  # its bytes let go once compiled
    compiled: object
    precision: str


class OpenVinoRuntime(onnx_feed.OnnxFileRuntime):
    name = "openvino"
    package = "openvino"
    install_hint = "pip install '.[openvino]'"
    precisions = tuple(PRECISIONS)

    def load(self, checked, path: str, threads: int = 0, precision: str = "f32"):
        ov = onnx_checks.import_onnx(path, "openvino")
        config = {"INFERENCE_PRECISION_HINT": PRECISIONS[precision], "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            core = ov.Core()
            compiled = core.compile_model(core.read_model(checked.data), "CPU", config)
        except Exception as error:  # OpenVINO raises RuntimeError with its conversion report for a model it cannot run
            first_line = next((line.strip() for line in str(error).splitlines() if "No conversion rule" in line),
                              (str(error).strip().splitlines() or [""])[-1])
            raise ModelFileError(f"{visible(path)}: OpenVINO {ov.__version__} cannot run the model "
                                 f"({shortened(first_line, 300)})") from None
        return OpenVinoModel(dataclasses.replace(checked, data=b""), compiled, precision)

    def owns(self, model) -> bool:
        return isinstance(model, OpenVinoModel)

    def forward(self, model, spec):
        checked, request = model.checked, model.compiled.create_infer_request()
        output = model.compiled.output(checked.output_name)

        def call(block):
            request.infer({0: onnx_feed.model_input(block, spec, checked)})
            outputs = request.get_tensor(output).data
            return onnx_feed.probabilities(outputs.copy(), spec)  # the request reuses its output buffer

        return call

    def version(self) -> str:
        import openvino

        return openvino.__version__.split("-")[0]


RUNTIME = OpenVinoRuntime()
