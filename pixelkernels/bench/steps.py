"""The calls a row times: forward (no autograd graph) and forward+backward (the case's loss,
differentiated with respect to the inputs' leaves: fresh gradients every call, as in a
training loop), for a pixelkernels backend or one of the comparisons."""

from __future__ import annotations

import torch

from .cases import Case, Inputs


def forward(case: Case, inp: Inputs, backend: str):
    def fwd():
        with torch.no_grad():
            return case.run(inp, backend)

    return fwd


def forward_backward(case: Case, inp: Inputs, backend: str):
    def step():
        return torch.autograd.grad(case.loss(case.run(inp, backend), inp), inp.grad)

    return step


def memory_step(case: Case, inp: Inputs, backend: str):
    """What peak memory is measured on: forward+backward, or forward for ops without backward."""
    return forward_backward(case, inp, backend) if case.loss else forward(case, inp, backend)
