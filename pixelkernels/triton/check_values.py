"""check_values for Triton's device (csrc/common/check_values.h): the verdict on the device in a
few torch ops per value set (aminmax, then torch._assert_async: a device-side assert, no host sync). No Triton
kernel: a Triton assert (tl.device_assert) is compiled out unless the kernel is built in debug
mode. Where the extension's CUDA kernels are loaded, _checks calls their one-pass kernel for
tensors of every backend instead; this variant serves installs without them."""

from .. import _checks
from .._schema import triton_variant


@triton_variant("check_values")
def check_values_op(values, low, high, ignore_index, what, hint):
    if len(what) != len(values):
        raise ValueError(f"check_values: what must name each of the {len(values)} value sets, got {len(what)} messages")
    for t, w in zip(values, what):
        _checks.range_on_device(t, low, high, ignore_index, w, hint)


def compile_specs():
    """No kernels (see the module docstring)."""
    return []
