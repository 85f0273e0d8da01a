"""The Triton interpreter without its per-call re-patching of triton.language (tests only).

Under TRITON_INTERPRET=1 a kernel launch patches the builtins of the language modules its
function sees (``tl``, ``tl.core``, ``tl.math``, ``tl.tensor``: module objects, so the patch is
global) for the launch's whole run, and restores them at its end. Every call of a ``@triton.jit``
device function inside the run patches them again (``inspect.getmembers`` over each module, and
fresh closures for the tensor methods), into a scope it drops: nothing changes, since the launch's
patch is already in force. That repetition was 27 % of an interpreted backward here
(``test_max_backward_over_many_tiles[triton-dot-none]``: 11.8 of 43 s of profile, 61,305 device
calls). ``install()`` skips it where the running launch has already patched every language module
the device function sees: by its own patch, or by an earlier device call's (``tl.core`` for the
functions of ``triton.language.standard`` such as ``tl.max``; those patches are never restored, so
they stay in force). Everything else (the launch's own patch, its restore, a device function's
first patch of a module) is the interpreter's as it is. Also ``_get_np_dtype``, a pure function of
the Triton type that builds a 19-entry dict at every call (663,264 calls, 11 of 144 s of profile in
``test_region_losses.py -k "triton and awkward"``), is cached per type. Triton versions without
these internals are left untouched.
"""

from __future__ import annotations

import inspect


def install() -> bool:
    """Install the skip; False (and nothing changed) where this Triton lacks the internals."""
    try:
        from triton.runtime import interpreter as ti
    except Exception:  # noqa: BLE001 - no Triton, or one that fails to import: nothing to speed up
        return False
    if not all(hasattr(ti, n) for n in ("_patch_lang", "_LangPatchScope", "GridExecutor", "tl")):
        return False
    if getattr(ti, "_pixelkernels_lean", False):
        return True
    original_patch, original_call = ti._patch_lang, ti.GridExecutor.__call__
    runs: list[set | None] = []  # per running launch: the language modules its patch covers
    seen: dict = {}  # function -> the language modules among its globals (a scan of them all)

    def langs(fn) -> set:
        if fn not in seen:
            seen[fn] = {id(v) for v in fn.__globals__.values() if inspect.ismodule(v) and v in (ti.tl, ti.tl.core)}
        return seen[fn]

    def patch_lang(fn):
        mine = langs(fn)
        if runs and runs[-1] is not None and mine <= runs[-1]:
            return ti._LangPatchScope()  # a device call: this run has patched its modules
        scope = original_patch(fn)
        if runs:  # the launch's own patch, or a device call's, which is never restored
            runs[-1] = mine | (runs[-1] or set())
        return scope

    def call(self, *args, **kwargs):
        runs.append(None)
        try:
            return original_call(self, *args, **kwargs)
        finally:
            runs.pop()

    ti._patch_lang, ti.GridExecutor.__call__ = patch_lang, call
    if hasattr(ti, "_get_np_dtype"):  # a pure function of the type, which rebuilds a dict each call
        original_np, np_of = ti._get_np_dtype, {}

        def get_np_dtype(tt_dtype):
            try:
                return np_of[tt_dtype]
            except KeyError:
                np_of[tt_dtype] = original_np(tt_dtype)
                return np_of[tt_dtype]
            except TypeError:  # an unhashable type: as the interpreter does
                return original_np(tt_dtype)

        ti._get_np_dtype = get_np_dtype
    ti._pixelkernels_lean = True
    return True
