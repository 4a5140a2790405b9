"""ONNX models for zeroskip's tests and benchmarks, built from torch with seeded random weights.

`from models import zoo` (needs torch) from the repository root, or `python models/build.py` to write the
files. Kept apart from the `zeroskip` package: nothing here is installed.
"""
