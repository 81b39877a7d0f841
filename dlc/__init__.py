"""dlc: an ONNX-to-CPU compiler driver and autotuner on Apache TVM."""

__version__ = "0.1.0"
