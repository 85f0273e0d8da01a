"""Triton kernels, one module per op, each registered as an opaque `torch.library.custom_op`."""
