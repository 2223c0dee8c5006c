"""Writes every reference file the C++ tests compare against.

Each module tests/python/gen_*.py defines generate(outdir); this runs them all,
so a new area of the library adds its oracle by adding one file.
"""
import importlib.util
import pathlib
import sys

import torch


def main(outdir: str) -> None:
    out = pathlib.Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    for path in sorted(pathlib.Path(__file__).parent.glob("gen_*.py")):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sub = out / path.stem[len("gen_"):]
        sub.mkdir(exist_ok=True)
        module.generate(sub)
        print(f"refs: {path.name} -> {sub}")


if __name__ == "__main__":
    main(sys.argv[1])
