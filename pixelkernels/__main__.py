"""`python -m pixelkernels {bench,train,evaluate,info} [options]` (also installed as the `pixelkernels`
command); `python -m pixelkernels <command> --help` lists a command's options."""

from __future__ import annotations

import argparse
import json
import sys

# One line per command, for `python -m pixelkernels --help`.
COMMANDS = {
    "bench": "time the paper workloads: each backend against the reference and plain PyTorch "
    "(one row per op family by default, --full for the whole table)",
    "train": "train a model of pixelkernels.models (synthetic data, or a folder of images and masks)",
    "evaluate": "evaluate a trained model on a benchmark in its published layout (DAVIS, DUTS, PASCAL-5i, ...) "
    "by its paper's protocol and metrics",
    "info": "print how this install was built (version, torch, CUDA arch, compiled backends) as JSON",
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """`--help` of every command: each option's help ends with its default, "(default: X)",
    unless the help already says what the default is, or the option is a flag (off unless given)
    or has no default value (its help says what happens without it)."""

    def _get_help_string(self, action):
        text = action.help or ""
        no_default = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if "default" in text or no_default or not action.option_strings:
            return text
        return super()._get_help_string(action)


def info_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog="python -m pixelkernels info",
        formatter_class=HelpFormatter,
        description="Print how this install was built, as JSON: pixelkernels.build_info() (the version, "
        "torch's, the CUDA version and architectures compiled for, OpenMP, Triton's version, the usable "
        "backends, and why the compiled extension failed to load, if it did).",
    )


def parser() -> argparse.ArgumentParser:
    """The top-level help: the commands, one line each."""
    p = argparse.ArgumentParser(
        prog="python -m pixelkernels",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="pixelkernels' commands; `python -m pixelkernels <command> --help` for a command's options.",
        epilog="commands:\n" + "\n".join(f"  {k:<9} {v}" for k, v in COMMANDS.items()),
    )
    p.add_argument("command", choices=sorted(COMMANDS), metavar="COMMAND", help="one of the commands below")
    p.add_argument("options", nargs=argparse.REMAINDER, help="the command's options (see its --help)")
    return p


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = argv.pop(0) if argv else "--help"
    if cmd == "bench":
        from .bench import main as bench_main

        return bench_main(argv)
    if cmd == "train":
        from .models.train import main as train_main

        return train_main(argv)
    if cmd == "evaluate":
        from .models.evaluate import main as evaluate_main

        return evaluate_main(argv)
    if cmd == "info":
        info_parser().parse_args(argv)
        import pixelkernels

        print(json.dumps(pixelkernels.build_info(), indent=1))
        return 0
    if cmd in ("help", "-h", "--help"):
        parser().print_help()
        return 0
    parser().parse_args([cmd, *argv])  # an unknown command: the usage and the error, exit 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
