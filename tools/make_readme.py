"""Write README.md from nbs/index.ipynb (what nbdev_readme does through Quarto, without needing Quarto).

    python tools/make_readme.py          # rewrite README.md
    python tools/make_readme.py --check  # exit 1 if README.md is out of date
"""
import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADER = "<!-- Generated from nbs/index.ipynb by tools/make_readme.py: edit the notebook, not this file. -->\n\n"


def index_to_markdown(nb_path: Path) -> str:
    cells = json.loads(nb_path.read_text(encoding="utf-8"))["cells"]
    parts = []
    for cell in cells:
        src = "".join(cell["source"]).strip()
        if not src or re.match(r"#\|\s*(hide|default_exp)", src):
            continue
        if cell["cell_type"] == "markdown":
            # nbdev's abstract line "> text" under the title becomes a plain paragraph in the README.
            src = re.sub(r"^> (.*)$", r"\1", src, count=1, flags=re.M) if src.startswith("# ") else src
            # Links to notebooks point at their rendered pages on the docs site; in the repo, at the notebooks.
            src = re.sub(r"\]\((\w+)\.ipynb\)", r"](nbs/\1.ipynb)", src)
            parts.append(src)
        elif cell["cell_type"] == "code":
            parts.append("```python\n" + src + "\n```")
    return HEADER + "\n\n".join(parts) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only check that README.md is up to date")
    args = ap.parse_args(argv)
    text = index_to_markdown(ROOT / "nbs" / "index.ipynb")
    readme = ROOT / "README.md"
    if args.check:
        if not readme.exists() or readme.read_text(encoding="utf-8") != text:
            print("README.md is out of date with nbs/index.ipynb: run `python tools/make_readme.py` and commit it.")
            return 1
        return 0
    readme.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
