"""Re-run notebooks and save their outputs, so that saved outputs come from the current code on this machine.

    python tools/refresh_outputs.py nbs/03f_trainer.ipynb nbs/04_sampling.ipynb ...

Cells flagged `#| slow`, `#| gpu` or `#| notest` (the flags nbdev_test skips; they train for minutes or need a GPU)
keep the outputs they have: rerun those notebooks by hand (`jupyter nbconvert --execute`) when their code changed.
Run from the repository root; each notebook runs in nbs/, as nbdev_test runs it. Stops at the first error.
"""
import os
import re
import sys
from pathlib import Path

from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell

SKIP = re.compile(r"^#\|\s*(slow|gpu|notest)\b", re.M)


def refresh(path: Path) -> int:
    "Execute `path` in place (skipped cells keep their outputs); return how many cells were skipped."
    nb = read_nb(path)
    skipped = [c for c in nb.cells if c.cell_type == "code" and SKIP.search(c.source)]
    cwd = os.getcwd()
    os.chdir(path.parent)
    try:
        shell = CaptureShell()
        shell.run_all(nb, exc_stop=True, preproc=lambda c: c.cell_type == "code" and bool(SKIP.search(c.source)))
    finally:
        os.chdir(cwd)
    write_nb(nb, path)
    return len(skipped)


if __name__ == "__main__":
    for p in map(Path, sys.argv[1:]):
        n = refresh(p.resolve())
        print(f"{p}: outputs refreshed" + (f" ({n} slow/gpu cells kept their saved outputs)" if n else ""), flush=True)
