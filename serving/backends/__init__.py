"""Inference backends behind one contract: in-process ONNX Runtime, Triton over gRPC,
and the hot swap that follows the served version. Imports the tasks, model store and tokenizer."""
