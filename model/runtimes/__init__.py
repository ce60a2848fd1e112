"""The runtimes that serve a model, Keras and ONNX, behind one small interface: model_files.load reads any model and
its card, forward gives the forward pass the scorer and the model commands call. Only this package knows which
framework serves a model."""
