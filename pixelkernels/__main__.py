"""`python -m pixelkernels bench [...]`, `python -m pixelkernels train MODEL [...]` and
`python -m pixelkernels info`."""

from __future__ import annotations

import json
import sys


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = argv.pop(0) if argv else "help"
    if cmd == "bench":
        from .bench import main as bench_main

        return bench_main(argv)
    if cmd == "train":
        from .models.train import main as train_main

        return train_main(argv)
    if cmd == "info":
        import pixelkernels

        print(json.dumps(pixelkernels.build_info(), indent=1))
        return 0
    print("usage: python -m pixelkernels {bench,train,info} [options]   (bench --help, train --help for their options)")
    return 0 if cmd in ("help", "-h", "--help") else 2


if __name__ == "__main__":
    sys.exit(main())
