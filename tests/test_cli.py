"""The `tinyllm` command line and run configurations: help texts, TOML + overrides, and the errors users see."""
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tinyllm import cli, config
from tinyllm.config import ConfigError, load_config
from tinyllm.run import load_run_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.toml"))


def run(*argv, capsys):
    try:
        status = cli.main(list(argv))
    except SystemExit as e:  # argparse's own --help / usage errors
        status = e.code
    out, err = capsys.readouterr()
    return status, out, err


def test_top_level_help_lists_every_subcommand(capsys):
    status, out, _ = run("--help", capsys=capsys)
    assert status == 0
    for name, cmd in cli.COMMANDS.items():
        assert name in out and cmd.summary in out
    assert "TINYLLM_DATA" in out


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_each_subcommand_help_explains_itself(name, capsys):
    status, out, _ = run(name, "--help", capsys=capsys)
    assert status == 0
    assert f"usage: tinyllm {name}" in out
    assert cli.COMMANDS[name].description.split(".")[0][:40] in " ".join(out.split())


def test_no_arguments_prints_help(capsys):
    status, out, _ = run(capsys=capsys)
    assert status == 0 and "commands" in out


def test_unknown_subcommand_is_a_usage_error(capsys):
    status, _, err = run("trian", capsys=capsys)
    assert status == 2 and "invalid choice" in err


def test_console_script_runs_without_traceback(tmp_path):
    # The installed entry point: an error is one line on stderr and exit status 2, never a traceback.
    exe = Path(sys.executable).parent / "tinyllm"  # the console script pip installed
    exe = str(exe) if exe.exists() else "tinyllm"
    r = subprocess.run([exe, "train", str(tmp_path / "missing.toml")], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.startswith("error: config file") and "does not exist" in r.stderr
    assert "Traceback" not in r.stderr
    r = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("tinyllm ")


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_loads(path, capsys):
    cfg = load_run_config(path)
    assert cfg.model.vocab_size > 256 and cfg.train.max_steps > 0
    status, out, _ = run("train", str(path), "--dry-run", capsys=capsys)
    assert status == 0 and "[model]" in out and "[train]" in out


def test_expected_named_configs_exist():
    assert {p.stem for p in CONFIGS} >= {"cpu-smoke", "cpu-tinystories", "gpu-tinystories", "gpu-gpt2-124m"}


def test_overrides_before_and_after_flags(capsys):
    smoke = str(ROOT / "configs" / "cpu-smoke.toml")
    for argv in (["train", smoke, "model.n_layer=3", "--dry-run"], ["train", smoke, "--dry-run", "model.n_layer=3"]):
        status, out, _ = run(*argv, capsys=capsys)
        assert status == 0 and "\nn_layer = 3\n" in out


def test_full_config_is_printed_and_round_trips(tmp_path, capsys):
    smoke = ROOT / "configs" / "cpu-smoke.toml"
    status, out, _ = run("train", str(smoke), "--dry-run", "train.lr=3e-4", "model.arch=\"llama\"", capsys=capsys)
    assert status == 0
    printed = tmp_path / "printed.toml"
    assert '"none"' not in out and "# n_kv_head: unset" in out   # TOML has no null: unset keys are comments
    printed.write_text(out)
    again = load_run_config(printed)
    assert again == load_run_config(smoke, ["train.lr=3e-4", "model.arch=llama"])
    assert again.model.arch == "llama" and again.train.lr == 3e-4


def test_unknown_key_lists_valid_keys(capsys):
    status, _, err = run("train", str(ROOT / "configs" / "cpu-smoke.toml"), "model.n_layers=3", capsys=capsys)
    assert status == 2
    assert "unknown key 'model.n_layers'" in err and "Did you mean 'model.n_layer'?" in err
    assert "model.n_head" in err and "Traceback" not in err


def test_unknown_section_in_file(tmp_path, capsys):
    p = tmp_path / "bad.toml"
    p.write_text("[optimiser]\nlr = 1e-3\n")
    status, _, err = run("train", str(p), "--dry-run", capsys=capsys)
    assert status == 2 and "unknown key 'optimiser'" in err and "train.lr" in err


@pytest.mark.parametrize("override,message", [
    ("train.lr=fast", "train.lr = 'fast' is not a valid float"),
    ("model.n_layer=4.5", "model.n_layer = 4.5 is not a valid int"),
    ("train.compile=1", "train.compile = 1 is not a valid bool | 'auto'"),
    ("train.dtype=\"fp8\"", "train.dtype = 'fp8' is not a valid 'auto' | 'float32' | 'bfloat16' | 'float16'"),
    ("train.betas=[0.9]", "train.betas = [0.9] is not a valid tuple[float, float]"),
    ("model.n_layer", "is not of the form section.key=value"),
    ("model.n_embd=100", None),  # valid: 100 / 4 heads
    ("model.n_embd=130", "n_embd=130 is not divisible by n_head=4"),  # the model's own validation, as a config error
])
def test_wrong_values_are_clear_errors(override, message, capsys):
    status, _, err = run("train", str(ROOT / "configs" / "cpu-smoke.toml"), override, "--dry-run", capsys=capsys)
    if message is None:
        assert status == 0
    else:
        assert status == 2 and message in err and "Traceback" not in err


def test_garbled_config_files(tmp_path, capsys):
    p = tmp_path / "bad.toml"
    p.write_text("[model\nn_layer = 4\n")
    status, _, err = run("train", str(p), "--dry-run", capsys=capsys)
    assert status == 2 and "is not valid TOML" in err
    p.write_bytes(b"[model]\nn_layer = 4 # \xff\xfe\n")
    status, _, err = run("train", str(p), "--dry-run", capsys=capsys)
    assert status == 2 and "not UTF-8" in err


def test_train_with_missing_inputs_is_one_clear_error(tmp_path, capsys):
    smoke = str(ROOT / "configs" / "cpu-smoke.toml")
    status, out, err = run("train", smoke, f"data.tokenizer={str(tmp_path / 'no-tok')!r}", capsys=capsys)
    assert status == 2 and "data.tokenizer = " in out and "no-tok" in err and "Traceback" not in err


def test_list_keys(capsys):
    status, out, _ = run("train", str(ROOT / "configs" / "cpu-smoke.toml"), "--list-keys", capsys=capsys)
    keys = out.split()
    assert status == 0 and "model.n_layer" in keys and "train.lr" in keys and "seed" in keys


def test_every_subcommand_works_and_a_missing_one_fails_clearly(capsys, monkeypatch):
    for name in cli.COMMANDS:
        with pytest.raises(SystemExit) as e: cli.main([name, "--help"])
        out = capsys.readouterr().out
        assert e.value.code == 0 and f"usage: tinyllm {name}" in out and "Not available yet" not in out, name
    monkeypatch.setitem(cli.COMMANDS, "future", cli.Command("tinyllm.not_yet", "later", "Arrives later.", "99_future"))
    status, _, err = run("future", "whatever", capsys=capsys)
    assert status == 2 and err.startswith("error: `tinyllm future` arrives with nbs/99_future.ipynb"), err


# The config machinery on its own, with a small schema.
@dataclasses.dataclass
class Inner:
    width: int = 8
    names: list[str] = dataclasses.field(default_factory=lambda: ["a"])


@dataclasses.dataclass
class Outer:
    inner: Inner = dataclasses.field(default_factory=Inner)
    out: Path = Path("x")
    limit: int | None = None
    required_ratio: float = 0.5


def test_config_defaults_file_and_overrides(tmp_path):
    assert load_config(Outer) == Outer()
    p = tmp_path / "c.toml"
    p.write_text('out = "runs/a"\nlimit = 3\n[inner]\nwidth = 16\nnames = ["x", "y"]\n')
    cfg = load_config(Outer, p, ["inner.width=32", "limit=none"])
    assert cfg == Outer(Inner(32, ["x", "y"]), Path("runs/a"), None)
    assert config.valid_keys(Outer) == ["inner.width", "inner.names", "out", "limit", "required_ratio"]


def test_config_section_given_a_value():
    with pytest.raises(ConfigError, match="must be a table"):
        load_config(Outer, None, ["inner=3"])
    with pytest.raises(ConfigError, match="is a value, not a section"):
        load_config(Outer, None, ["limit=3", "limit.x=4"])


def test_missing_required_key():
    @dataclasses.dataclass
    class NeedsPath:
        path: Path

    with pytest.raises(ConfigError, match="missing required key.*path"):
        load_config(NeedsPath)


def test_bench_runs_a_script_from_the_folder_it_is_given(tmp_path, capsys, monkeypatch):
    "`tinyllm bench` looks in --bench-dir, $TINYLLM_BENCH or ./bench, never in the package's own location."
    (tmp_path / "echo.py").write_text("import sys\nprint('args:', sys.argv[1:])\n")
    status, out, _ = run("bench", "--bench-dir", str(tmp_path), "echo", "--quick", "--x", "1", capsys=capsys)
    assert status == 0 and "args: ['--quick', '--x', '1']" in out
    monkeypatch.setenv(cli.BENCH_ENV, str(tmp_path))
    status, out, err = run("bench", "nosuch", capsys=capsys)
    assert status != 0 and f"no benchmark 'nosuch' in {tmp_path}" in err and "echo" in err
    monkeypatch.delenv(cli.BENCH_ENV)
    monkeypatch.chdir(tmp_path)
    status, out, err = run("bench", "echo", capsys=capsys)
    assert status != 0 and "no benchmark folder at bench" in err and "--bench-dir" in err


def test_notebooks_are_numbered_in_reading_order_without_forward_imports():
    sys.path.insert(0, str(ROOT / "tools"))
    from check_order import problems
    assert problems() == []


def test_the_order_check_finds_a_forward_import_and_a_shared_number(tmp_path):
    sys.path.insert(0, str(ROOT / "tools"))
    from check_order import problems
    def notebook(name, *cells):
        (tmp_path / name).write_text(json.dumps({"cells": [{"cell_type": "code", "source": c} for c in cells]}))
    notebook("01_a.ipynb", "#| default_exp a\n", "from tinyllm.b import thing\nthing()")
    notebook("02_b.ipynb", "#| default_exp b\n", "from tinyllm import a")
    notebook("02_c.ipynb", "x = 1")
    found = problems(known=set(), nbs=tmp_path)
    assert found == ["02_c.ipynb and 02_b.ipynb share the number 02",
                     "01_a.ipynb imports tinyllm.b, which 02_b.ipynb (later) defines"], found


def test_a_run_prints_only_what_differs_from_the_defaults(monkeypatch, capsys):
    "`tinyllm train` without --dry-run: a few lines of changed settings, not the ~70 of the whole configuration."
    import tinyllm.run
    started = []
    monkeypatch.setattr(tinyllm.run, "run_training", lambda cfg, resume=None: started.append(cfg))
    smoke = ROOT / "configs" / "cpu-smoke.toml"
    status, out, _ = run("train", str(smoke), "model.n_layer=3", capsys=capsys)
    assert status == 0 and len(started) == 1 and started[0].model.n_layer == 3
    assert "model.n_layer = 3" in out and "[model]" not in out and "unset" not in out
    assert len(out.splitlines()) < 30 and f"{started[0].out_dir}/config.toml" in out


@pytest.mark.slow
def test_an_editable_install_is_quiet(tmp_path):
    "`pip install -e .` in a fresh virtual environment prints no warning from the build backend (setuptools)."
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    up = subprocess.run(pip + ["install", "-q", "--upgrade", "pip"], capture_output=True, text=True)
    if up.returncode: pytest.skip(f"no package index reachable: {up.stderr[-200:]}")
    r = subprocess.run(pip + ["install", "--no-deps", "-e", str(ROOT)], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    noise = [ln for ln in (r.stdout + r.stderr).splitlines()
             if "warning" in ln.lower() and "is ignored: it is neither a file nor a directory" not in ln]
    assert not noise, "\n".join(noise)
