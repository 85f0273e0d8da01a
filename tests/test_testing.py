"""pixelkernels.testing: the SPEC §4 tolerance rules themselves, so that no test can pass on
a wrong answer because of them."""

from __future__ import annotations

import pytest
import torch

from pixelkernels.testing import assert_close, max_rel_error

HALF = (torch.float16, torch.bfloat16)


@pytest.mark.parametrize("dtype", HALF)
def test_half_rule_refuses_an_all_zero_gradient(dtype):
    """Gradients below 1e-2 everywhere (the case an absolute 1e-2 let through)."""
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(1, 2, 3, 3001, generator=g, dtype=torch.float64) * 3e-3
    with pytest.raises(AssertionError, match="relative error in norm"):
        assert_close(torch.zeros_like(ref).to(dtype), ref, dtype)


@pytest.mark.parametrize("dtype", HALF)
def test_half_rule_accepts_half_rounding(dtype):
    g = torch.Generator().manual_seed(1)
    ref = torch.randn(4, 5, 6, generator=g, dtype=torch.float64) * 3e-3
    assert_close(ref.to(dtype), ref, dtype)
    assert_close(ref.float(), ref, dtype)  # a float32 output of half inputs: the half rule


def test_half_rule_elementwise_part():
    """The norm can hide one wrong element among many; the elementwise check cannot."""
    ref = torch.ones(10000, dtype=torch.float64)
    bad = ref.clone()
    bad[17] = 1.5
    with pytest.raises(AssertionError, match="not close"):
        assert_close(bad.half(), ref, torch.float16)


def test_float_rules():
    ref = torch.tensor([1.0, -2.0, 0.0], dtype=torch.float64)
    assert_close(ref * (1 + 5e-11), ref, torch.float64)
    with pytest.raises(AssertionError):
        assert_close(ref * (1 + 1e-9), ref, torch.float64)
    assert_close((ref * (1 + 5e-6)).float(), ref, torch.float32)
    with pytest.raises(AssertionError):
        assert_close((ref * (1 + 1e-4)).float(), ref, torch.float32)


def test_nan_must_match_and_shapes_must_agree():
    ref = torch.tensor([float("nan"), 1.0], dtype=torch.float64)
    assert_close(ref.clone(), ref, torch.float64)
    with pytest.raises(AssertionError):
        assert_close(torch.tensor([0.0, 1.0], dtype=torch.float64), ref, torch.float64)
    with pytest.raises(AssertionError, match="shape"):
        assert_close(torch.zeros(2, 1), torch.zeros(2))


def test_max_rel_error():
    assert max_rel_error(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 4.0])) == 0.5
    assert max_rel_error(torch.zeros(0), torch.zeros(0)) == 0.0


def test_fuzz_floor_widens_only_to_twice_the_references_own_error():
    """tests/fuzz.py's floor: where the reference in the working dtype misses SPEC §4 (here by
    3e-6 at an exact 0), a backend may miss by up to twice that (plus SPEC's atol), no more;
    without a floor, or where the reference meets SPEC, SPEC alone; NaN still matches only NaN."""
    from fuzz import _close

    nan = float("nan")
    oracle = torch.tensor([1.0, 0.0, nan], dtype=torch.float64)
    floor = torch.tensor([1.0, 3e-6, nan])
    within = torch.tensor([1.0, 6.5e-6, nan])
    _close(within, oracle, torch.float32, "within", floor=floor)
    with pytest.raises(AssertionError):
        _close(torch.tensor([1.0, 7.5e-6, nan]), oracle, torch.float32, "beyond", floor=floor)
    with pytest.raises(AssertionError):
        _close(within, oracle, torch.float32, "no floor")
    with pytest.raises(AssertionError):
        _close(torch.tensor([1.0, 0.0, 0.0]), oracle, torch.float32, "nan", floor=floor)
    # a reference within SPEC there (5e-7 at a 0) widens nothing
    with pytest.raises(AssertionError):
        _close(torch.tensor([1.0, 1.5e-6, nan]), oracle, torch.float32, "spec", floor=torch.tensor([1.0, 5e-7, nan]))
