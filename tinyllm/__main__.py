

# %% ../nbs/91_cli.ipynb 14
#| eval: false
import sys

from tinyllm.cli import main

if __name__ == "__main__":
    sys.exit(main())

# %% ../nbs/91_cli.ipynb 14
#| eval: false
import sys

from tinyllm.cli import main

if __name__ == "__main__":
    sys.exit(main())

# %% ../nbs/91_cli.ipynb 14
#| eval: false
import sys

from tinyllm.cli import main

if __name__ == "__main__":
    sys.exit(main())

# %% ../nbs/91_cli.ipynb 14
#| eval: false
import sys

from tinyllm.cli import main

if __name__ == "__main__":
    sys.exit(main())

# %% ../nbs/91_cli.ipynb 14
#| eval: false
import sys

from tinyllm.cli import main

if __name__ == "__main__":
    sys.exit(main())

# %% ../nbs/91_cli.ipynb 14
#| eval: false
import sys

from tinyllm.cli import main

if __name__ == "__main__":
    sys.exit(main())

# %% ../nbs/91_cli.ipynb 14
#| eval: false
import sys

from tinyllm.cli import main

if __name__ == "__main__":
    sys.exit(main())