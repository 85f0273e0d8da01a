__version__ = "0.1.0"


def local_tag(torch_version: str, torch_cuda: str | None) -> str:
    """A wheel's local version for the torch it is built against: "cu130.pt211" (torch 2.11.0,
    CUDA 13.0), "cu128.pt29" (2.9.1, CUDA 12.8), "cpu.pt213" (a CPU build). Patch releases of
    torch keep its C++ ABI, so the tag names major.minor only: 2.14.0 and 2.14.1 share pt214.
    Read by setup.py (the version it writes) and at import (the wheel a mismatch should install)."""
    major, minor = torch_version.split("+")[0].split(".")[:2]
    dev = "cu" + torch_cuda.replace(".", "") if torch_cuda else "cpu"
    return f"{dev}.pt{major}{minor}"
