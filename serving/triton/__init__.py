"""Triton Inference Server: the local server launcher, the python-backend model, the
repository layout and TensorRT plans. Imports only `serving.model_store` and the process helper."""
