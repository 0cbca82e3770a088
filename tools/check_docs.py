"""Offline docs: render every notebook to HTML without Quarto, then check each page in headless Chromium.

The official site is nbdev's Quarto site (`nbdev_docs`). Where Quarto cannot be installed, this script builds the
closest thing from pip/apt packages alone: nbdev's own notebook processing (`proc_nbs`: directives stripped, hidden
cells dropped, `show_doc` rendered) followed by nbconvert's HTML export, plus an index page linking the chapters.
It then opens every page in headless Chromium and fails if a page is missing or empty, shows a Python traceback, has an
image that does not load or has no alt text, or draws a CJK or emoji character as an empty box (no font for it). Screenshots of each
whole page are saved for a person to look at.

    python tools/check_docs.py                       # build into docs-offline/, check, screenshots in docs-offline/screenshots
    python tools/check_docs.py --no-browser          # build only
"""
import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"

# Injected into each page for the check only: after everything loads, it records what a reader would see broken.
CHECK_JS = """
<script>
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const broken = imgs.filter(i => !i.complete || i.naturalWidth === 0).map(i => (i.src || '').slice(0, 80));
  const text = document.body ? document.body.innerText : '';
  const tb = /Traceback \\(most recent call last\\)|\\w+Error: .*\\n.*Traceback/.test(text)
             || document.querySelectorAll('[data-mime-type="application/vnd.jupyter.stderr"] .ansi-red-fg, .output_error, .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]').length > 0;
  // tofu: a CJK or emoji character that no installed font draws renders exactly like an unassigned code point
  const c = document.createElement('canvas'); c.width = c.height = 40;
  const g = c.getContext('2d');
  const draw = ch => { g.clearRect(0, 0, 40, 40); g.font = '28px sans-serif'; g.fillText(ch, 2, 30);
                       return g.getImageData(0, 0, 40, 40).data.join(','); };
  const missing = draw('\uE000');
  const wide = new Set(text.match(/[\u2E80-\u9FFF\uAC00-\uD7AF\uF900-\uFAFF]|\\p{Extended_Pictographic}/gu) || []);
  const tofu = Array.from(wide).filter(ch => draw(ch) === missing);
  const noalt = imgs.filter(i => !i.alt || i.alt.startsWith('No description')).length;
  const r = {images: imgs.length, broken: broken, noalt: noalt, chars: text.trim().length, traceback: tb, tofu: tofu,
             height: document.documentElement.scrollHeight,
             title: document.title, headings: document.querySelectorAll('h1').length};
  const m = document.createElement('pre'); m.id = 'tinyllm-check'; m.textContent = JSON.stringify(r);
  document.body.appendChild(m);
});
</script>
"""


def notebooks():
    return sorted(p for p in NBS.glob("*.ipynb") if not p.name.startswith("_"))


def process(problems: list) -> Path:
    "nbdev's documentation processing of each notebook into _proc/ (what Quarto would be given); failures go to `problems`."
    import nbdev.serve_drv
    from nbdev.serve import FilterDefaults

    proc = ROOT / "_proc"
    if proc.exists():
        shutil.rmtree(proc)
    proc.mkdir()
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        for nb in notebooks():
            try:
                nbdev.serve_drv.main((nb, proc / nb.name, FilterDefaults))
            except Exception as e:  # noqa: BLE001 - report every notebook that fails, then stop
                cause = e.__cause__ or e
                problems.append(f"{nb.name}: nbdev's docs processing failed: {str(e).splitlines()[0]} "
                                f"({type(cause).__name__}: {cause}). Cells that import are executed on their own "
                                "during docs processing: keep imports in import-only cells.")
    finally:
        os.environ.pop("IN_TEST", None)
        os.chdir(cwd)
    return proc


def error_outputs(nb_path: Path) -> list[str]:
    "Cells whose saved output is a Python exception."
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    bad = []
    for i, c in enumerate(nb["cells"]):
        for o in c.get("outputs", []):
            if o.get("output_type") == "error":
                bad.append(f"cell {i}: {o.get('ename')}: {o.get('evalue')}")
    return bad


IMPORT_LINE = re.compile(r"^\s*(import \w|from [\w.]+ import )|;\s*(import|from) \w")
# an optional import (`try: import x` / `except ImportError: x = None`) is still an import-only cell
OPTIONAL_IMPORT = re.compile(r"^\s*(try:|except (ImportError|ModuleNotFoundError)( as \w+)?:|\w+ = None)\s*$")


def mixed_import_cells(nb_path: Path) -> list[str]:
    """Code cells that import *and* do other work. nbdev's docs processing executes every importing cell on its own
    (to render `show_doc`), so such a cell fails there with a NameError even though the notebook runs top to bottom."""
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    bad = []
    for i, c in enumerate(nb["cells"]):
        lines = "".join(c["source"]).splitlines() if c["cell_type"] == "code" else []
        if any(re.match(r"#\|\s*export", ln) for ln in lines):
            continue
        code = []
        for ln in (ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")):
            if code and code[-1].count("(") > code[-1].count(")"): code[-1] += " " + ln.strip()  # `from x import (a,\n b)`
            else: code.append(ln)
        imports = [ln for ln in code if IMPORT_LINE.search(ln)]
        if imports and any(not (IMPORT_LINE.search(ln) or OPTIONAL_IMPORT.match(ln)) for ln in code):
            bad.append(f"cell {i} mixes `{imports[0].strip()}` with other code: move the import to an import-only cell")
    return bad


def quarto_to_plain(nb: dict) -> dict:
    "What Quarto does with nbdev's processed notebook, for plain nbconvert: front matter -> title, `echo: false` -> no input."
    cells = []
    for c in nb["cells"]:
        src = "".join(c["source"])
        if c["cell_type"] == "raw" and src.startswith("---"):
            import yaml  # the front matter is YAML: a long description is folded over several lines
            meta = yaml.safe_load(src.strip().strip("-")) or {}
            title, desc = str(meta.get("title", "")).strip(), " ".join(str(meta.get("description", "")).split())
            c = {"cell_type": "markdown", "metadata": {}, "source": f"# {title}\n\n*{desc}*" if desc else f"# {title}"}
        elif c["cell_type"] == "code":
            lines = src.splitlines()
            if any(re.match(r"#\|\s*echo:\s*false", ln) for ln in lines):
                c.setdefault("metadata", {}).setdefault("tags", []).append("remove_input")
            c["source"] = "\n".join(ln for ln in lines if not ln.startswith("#|"))
            alt = next((m.group(1) for ln in lines for m in [re.match(r'#\|\s*fig-alt:\s*"?(.*?)"?\s*$', ln)] if m), None)
            for o in c.get("outputs", []):  # Quarto's fig-alt becomes the image's alt attribute
                png = o.get("data", {}).pop("image/png", None) if alt else None
                if png:
                    src = "".join(png).replace("\n", "")
                    o["data"]["text/html"] = f'<img src="data:image/png;base64,{src}" alt="{html.escape(alt, quote=True)}">'
                    o["data"].pop("text/plain", None)
            for o in c.get("outputs", []):  # show_doc's Quarto link attributes mean nothing to plain Markdown
                md = o.get("data", {}).get("text/markdown")
                if md:
                    o["data"]["text/markdown"] = re.sub(r"\{target=[^}]*\}", "", "".join(md))
        keep = ("id", "cell_type", "metadata", "source") + (("outputs", "execution_count") if c["cell_type"] == "code" else ())
        c = {k: c[k] for k in keep if k in c}  # nbdev's processing leaves private keys that fail nbformat validation
        c.setdefault("metadata", {}), c.setdefault("id", f"cell-{len(cells)}")
        if c["cell_type"] == "code":
            c.setdefault("outputs", []), c.setdefault("execution_count", None)
        cells.append(c)
    nb["cells"] = cells
    return nb


def render(proc: Path, out: Path) -> list[Path]:
    "HTML page per processed notebook, links between notebooks rewritten to the HTML pages, plus index.html."
    out.mkdir(parents=True, exist_ok=True)
    pages = []
    for nb in notebooks():
        src = proc / nb.name
        if not src.exists():
            raise SystemExit(f"nbdev produced no processed notebook for {nb.name}")
        prepared = out / "_nb" / nb.name
        prepared.parent.mkdir(exist_ok=True)
        prepared.write_text(json.dumps(quarto_to_plain(json.loads(src.read_text(encoding="utf-8")))), encoding="utf-8")
        subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "html", "--output-dir", str(out),
                        "--no-prompt", "--TagRemovePreprocessor.remove_input_tags=remove_input",
                        "--log-level", "WARN", str(prepared)], check=True)
        page = out / (nb.stem + ".html")
        text = page.read_text(encoding="utf-8")
        text = re.sub(r'href="(\w+)\.ipynb"', r'href="\1.html"', text)
        css = NBS / "styles.css"                           # the site's own stylesheet, as Quarto would apply it
        if css.exists(): text = text.replace("</head>", f"<style>{css.read_text(encoding='utf-8')}</style></head>", 1)
        page.write_text(text, encoding="utf-8")
        pages.append(page)
    return pages


def title_of(nb: Path) -> tuple[str, str]:
    cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
    for c in cells:
        src = "".join(c["source"])
        if c["cell_type"] == "markdown" and src.startswith("# "):
            lines = src.splitlines()
            abstract = next((ln[2:] for ln in lines[1:] if ln.startswith("> ")), "")
            return lines[0][2:].strip(), abstract
    return nb.stem, ""


def write_contents(out: Path) -> Path:
    rows = []
    for nb in notebooks():
        title, abstract = title_of(nb)
        rows.append(f'<li><a href="{nb.stem}.html">{html.escape(title)}</a> — {html.escape(abstract)}</li>')
    page = out / "contents.html"
    page.write_text("<!doctype html><html><head><meta charset='utf-8'><title>tinyllm — contents</title></head>"
                    "<body style='font-family:sans-serif;max-width:50em;margin:2em auto'>"
                    "<h1>tinyllm</h1><p>Offline rendering of the notebooks (the official site is built by "
                    "<code>nbdev_docs</code> with Quarto).</p><ul>" + "\n".join(rows) + "</ul></body></html>",
                    encoding="utf-8")
    return page


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def browse(exe: str, page: Path, shots: Path) -> dict:
    "Load `page` in headless Chromium; return what the injected script measured, and save a screenshot."
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / page.name
        probe.write_text(page.read_text(encoding="utf-8").replace("</body>", CHECK_JS + "</body>"), encoding="utf-8")
        for asset in page.parent.iterdir():  # images or css next to the page
            if asset.is_file() and asset.suffix != ".html":
                shutil.copy(asset, Path(tmp) / asset.name)
        flags = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--virtual-time-budget=10000", f"--user-data-dir={tmp}/profile"]
        dom = subprocess.run(flags + ["--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120).stdout
        m = re.search(r'<pre id="tinyllm-check">(.*?)</pre>', dom, re.S)
        if not m:
            return {"error": "the page did not finish loading in the browser"}
        found = json.loads(html.unescape(m.group(1)))
        height = min(max(int(found.get("height", 1600)), 800), 30000)   # the whole page, within Chromium's limits
        subprocess.run(flags + [f"--window-size=1280,{height}", f"--screenshot={shots / (page.stem + '.png')}",
                                page.as_uri()], capture_output=True, timeout=180)
    return found


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "docs-offline", help="output folder (default docs-offline/)")
    ap.add_argument("--screenshots", type=Path, default=None, help="where screenshots go (default OUT/screenshots)")
    ap.add_argument("--no-browser", action="store_true", help="build the HTML only")
    args = ap.parse_args(argv)
    out = args.out.resolve()
    shots = (args.screenshots or out / "screenshots").resolve()
    if out.exists():
        shutil.rmtree(out)
    problems = []
    for nb in notebooks():
        problems += [f"{nb.name}: saved output shows an exception ({e})" for e in error_outputs(nb)]
        problems += [f"{nb.name}: {e}" for e in mixed_import_cells(nb)]
    proc = process(problems)
    if problems:
        print("docs check FAILED:\n  " + "\n  ".join(problems))
        return 1
    pages = render(proc, out) + [write_contents(out)]
    print(f"rendered {len(pages)} pages into {out}")
    if not args.no_browser:
        exe = chromium()
        if exe is None:
            raise SystemExit("Chromium not found: install Debian's `chromium` package (apt-get install chromium) "
                             "or run with --no-browser")
        shots.mkdir(parents=True, exist_ok=True)
        for page in pages:
            r = browse(exe, page, shots)
            status = "ok"
            if "error" in r:
                status = r["error"]
            elif r["chars"] < 200:
                status = f"page is (nearly) empty: {r['chars']} characters of text"
            elif r["traceback"]:
                status = "page shows a Python traceback"
            elif r["broken"]:
                status = f"{len(r['broken'])} broken image(s): {r['broken'][:3]}"
            elif r.get("noalt"):
                status = f"{r['noalt']} figure(s) without alt text: add `#| fig-alt: \"what it shows\"` to the cell"
            elif r.get("tofu"):
                status = (f"{len(r['tofu'])} character(s) drawn as empty boxes, no font has them: {''.join(r['tofu'][:10])} "
                          "(install fonts-noto-cjk and fonts-noto-color-emoji)")
            print(f"  {page.name:28s} {r.get('chars', 0):7d} chars {r.get('images', 0):3d} images  {status}")
            if status != "ok":
                problems.append(f"{page.name}: {status}")
        print(f"screenshots in {shots}")
    if problems:
        print("docs check FAILED:\n  " + "\n  ".join(problems))
        return 1
    print("docs check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
