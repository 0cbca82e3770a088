"`python -m tinyllm ...`: the `tinyllm` command, in the form `torchrun -m tinyllm train CONFIG` needs."
import sys

from tinyllm.cli import main

if __name__ == "__main__":
    sys.exit(main())
