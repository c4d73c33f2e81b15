"""Every code block of README.md runs, in a small form, so the README cannot drift from the code.

The convention (README authors: write blocks so that these rules apply):

* Fenced blocks are found by their language tag. ``python`` and ``bash`` blocks are code; an
  untagged or ``text`` block is layout or printed output and is not run; ``yaml`` is parsed. Any
  other tag fails this test until a rule for it is added here.
* ``python`` blocks run top to bottom, each in a fresh interpreter, with ``CKDLAB_RUNS``,
  ``CKDLAB_RESULTS`` and ``CKDLAB_FIGURES`` in one temporary folder shared by the whole README (also
  the working directory), so a later block may use what an earlier one made. Before running, every
  call of a ckdlab function that takes a ``profile`` argument (``api.distill(...)``,
  ``finetune_teacher(...)``) is rewritten to ``profile="smoke"``, whether the block passed one or not.
* ``bash`` blocks run line by line (``\\`` continues a line, ``#`` starts a comment):
    - ``ckdlab <command> ...`` runs as ``python -m ckdlab.cli <command> ...`` (in this process) with
      ``--profile smoke`` replacing or added to the options of every command that has ``--profile``;
      it must exit with status 0. ``ckdlab notebooks`` and ``ckdlab paper`` are parsed only (see
      :data:`PARSE_ONLY`).
    - ``make <target>`` is checked for syntax only: the target exists in the Makefile.
    - ``accelerate <command> ...`` is parsed by accelerate's own command-line parser; for
      ``accelerate launch ... -m ckdlab.cli ...`` the ckdlab part is parsed by ckdlab's parser too.
    - leading ``NAME=value`` words (environment for that one command, e.g. ``ACCELERATE_USE_CPU=true``)
      are set aside; the rest of the line follows these rules.
    - any other first word fails this test until a rule for it is added here.
* An HTML comment right before a block changes what runs:
    - ``<!-- smoke: ... -->`` gives the smoke form of the block (code or command lines, same
      language), which then runs under the rules above instead of the block itself;
    - ``<!-- smoke-skip: reason -->`` does not run the block and reports it as skipped with the reason.

Nothing is skipped silently: each block is one test item named after its line in the README
(``test_readme_block[line40-python]``), marked ``slow`` like the notebook tests (``make test`` runs
them, ``make test-fast`` does not).
"""
from __future__ import annotations

import ast
import importlib
import inspect
import os
import re
import shlex
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CODE_LANGUAGES = ("python", "bash")
NOT_RUN = {"": "untagged block: layout or output, not code", "text": "text block: layout or output, not code"}
PARSED = ("yaml",)
# ckdlab commands that are parsed, not run, and why.
PARSE_ONLY = {
    "notebooks": "runs every notebook for minutes; tests/test_notebooks.py runs them in the smoke profile",
    "paper": "GPU work on the papers' models; tests/test_paper_configs.py checks every paper config",
}
SMOKE = "smoke"
BLOCK_TIMEOUT_S = 600


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    smoke: str | None = None  # the code of a <!-- smoke: ... --> comment
    skip: str | None = None  # the reason of a <!-- smoke-skip: ... --> comment

    @property
    def runs(self) -> str:
        return self.smoke if self.smoke is not None else self.code


_COMMENT = re.compile(r"<!--\s*(smoke|smoke-skip):((?:(?!-->).)*)-->\s*$", re.S)


def readme_blocks(text: str) -> list[Block]:
    """Every fenced block with the smoke comment right before it (blank lines between are allowed)."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        fence = re.match(r"^```\s*([\w+-]*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        if end is None:
            raise ValueError(f"README.md line {i + 1}: a code fence is never closed")
        before = "\n".join(lines[:i]).rstrip()
        comment = _COMMENT.search(before) if before.endswith("-->") else None
        smoke = skip = None
        if comment and comment.group(1) == "smoke":
            smoke = textwrap.dedent(comment.group(2).strip("\n")).strip()
        elif comment:
            skip = comment.group(2).strip()
            if not skip:
                raise ValueError(f"README.md line {i + 1}: <!-- smoke-skip: --> needs a reason")
        blocks.append(Block(i + 1, fence.group(1).lower(), "\n".join(lines[i + 1:end]), smoke, skip))
        i = end + 1
    return blocks


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))


# ----------------------------------------------------------------- python: force the smoke profile
def _resolve(node: ast.expr, names: dict[str, object]) -> object | None:
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.Attribute):
        owner = _resolve(node.value, names)
        return getattr(owner, node.attr, None) if owner is not None else None
    return None


class ForceSmoke(ast.NodeTransformer):
    """Rewrites each call of a ckdlab callable that has a ``profile`` parameter to ``profile="smoke"``."""

    def __init__(self) -> None:
        self.names: dict[str, object] = {}
        self.rewritten: list[str] = []

    def visit_Import(self, node: ast.Import) -> ast.Import:
        for alias in node.names:
            if alias.name.startswith("ckdlab"):
                module = importlib.import_module(alias.name)
                self.names[alias.asname or alias.name.split(".")[0]] = module if alias.asname else importlib.import_module("ckdlab")
        return node

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.ImportFrom:
        if (node.module or "").startswith("ckdlab"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                value = getattr(module, alias.name, None)
                if value is None:
                    value = importlib.import_module(f"{node.module}.{alias.name}")
                self.names[alias.asname or alias.name] = value
        return node

    def visit_Call(self, node: ast.Call) -> ast.Call:
        self.generic_visit(node)
        target = _resolve(node.func, self.names)
        if not callable(target):
            return node
        try:
            signature = inspect.signature(target)
        except (TypeError, ValueError):
            return node
        if "profile" not in signature.parameters:
            return node
        position = list(signature.parameters).index("profile")
        if len(node.args) > position and not any(isinstance(a, ast.Starred) for a in node.args[: position + 1]):
            node.args[position] = ast.Constant(SMOKE)
        else:
            node.keywords = [k for k in node.keywords if k.arg != "profile"] + [ast.keyword("profile", ast.Constant(SMOKE))]
        self.rewritten.append(ast.unparse(node.func))
        return node


def smoke_python(code: str) -> tuple[str, list[str]]:
    """``code`` with every profile-taking ckdlab call forced to the smoke profile, and the calls rewritten."""
    transformer = ForceSmoke()
    tree = ast.fix_missing_locations(transformer.visit(ast.parse(code)))
    return ast.unparse(tree), transformer.rewritten


# ----------------------------------------------------------------- bash: one rule per first word
def bash_commands(code: str) -> list[list[str]]:
    """The commands of a bash block: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n", " ", code)
    return [words for line in joined.splitlines() if (words := shlex.split(line, comments=True))]


def ckdlab_subparsers() -> dict:
    from ckdlab.cli import build_parser

    parser = build_parser()
    return next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices


def smoke_ckdlab(args: list[str]) -> list[str]:
    """``args`` (after ``ckdlab``) with ``--profile smoke`` where the command takes a profile."""
    command = ckdlab_subparsers().get(args[0]) if args else None
    if command is None:
        raise AssertionError(f"'ckdlab {' '.join(args)}': no such ckdlab command")
    if "--profile" not in command._option_string_actions:
        return list(args)
    out, skip_next = [], False
    for word in args:
        if skip_next:
            skip_next = False
            continue
        if word == "--profile":
            skip_next = True
            continue
        if not word.startswith("--profile="):
            out.append(word)
    return out + ["--profile", SMOKE]


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return {m.group(1) for m in re.finditer(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.M)}


def accelerate_parser():
    from accelerate.commands import config, env, estimate, launch, merge, test, tpu
    from accelerate.commands.utils import CustomArgumentParser

    parser = CustomArgumentParser("accelerate", allow_abbrev=False)
    sub = parser.add_subparsers()
    for register in (config.get_config_parser, estimate.estimate_command_parser, env.env_command_parser,
                     launch.launch_command_parser, merge.merge_command_parser, tpu.tpu_command_parser, test.test_command_parser):
        register(subparsers=sub)
    return parser


def parse_or_fail(parser, args: list[str], what: str):
    try:
        return parser.parse_args(args)
    except SystemExit as exit_:
        raise AssertionError(f"'{what}' does not parse (exit status {exit_.code})") from None


def check_accelerate(words: list[str]) -> str:
    parsed = parse_or_fail(accelerate_parser(), words[1:], " ".join(words))
    script = getattr(parsed, "training_script", None)
    if script is None:
        return f"parsed: {' '.join(words)}"
    if getattr(parsed, "module", False) and script == "ckdlab.cli":
        from ckdlab.cli import build_parser

        parse_or_fail(build_parser(), parsed.training_script_args, "ckdlab " + " ".join(parsed.training_script_args))
        return f"parsed (accelerate and ckdlab): {' '.join(words)}"
    assert (ROOT / script).exists(), f"'{' '.join(words)}': the launched script {script} does not exist"
    return f"parsed: {' '.join(words)}"


# ----------------------------------------------------------------- the README's workspace
@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """One folder for the whole README: working directory and runs / results / figures."""
    return tmp_path_factory.mktemp("readme")


@pytest.fixture
def in_workspace(workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    for name in ("runs", "results", "figures"):
        monkeypatch.setenv(f"CKDLAB_{name.upper()}", str(workspace / name))
    return workspace


def run_python(code: str, workspace: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    env.update({f"CKDLAB_{name.upper()}": str(workspace / name) for name in ("runs", "results", "figures")})
    done = subprocess.run([sys.executable, "-c", code], cwd=workspace, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
    assert done.returncode == 0, f"the block failed (status {done.returncode}):\n{code}\n--- stderr ---\n{done.stderr[-4000:]}"


def run_bash(code: str, capsys) -> list[str]:
    """Run or check each command of a bash block under the rules of the module docstring; what was done."""
    from ckdlab import cli

    done = []
    for words in bash_commands(code):
        while len(words) > 1 and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
            words = words[1:]
        first = words[0]
        if first == "ckdlab":
            args = smoke_ckdlab(words[1:])
            if args[0] in PARSE_ONLY:
                parse_or_fail(cli.build_parser(), args, "ckdlab " + " ".join(args))
                done.append(f"parsed only ({PARSE_ONLY[args[0]]}): ckdlab {' '.join(args)}")
                continue
            status = cli.main(args)
            printed = capsys.readouterr()
            assert status == 0, f"'ckdlab {' '.join(args)}' exited with {status}:\n{printed.err[-3000:]}"
            done.append(f"ran: ckdlab {' '.join(args)}")
        elif first == "make":
            targets = [w for w in words[1:] if "=" not in w and not w.startswith("-")]
            missing = sorted(set(targets) - make_targets())
            assert targets and not missing, f"'{' '.join(words)}': no Makefile target {missing or '(none named)'}"
            done.append(f"target exists: {' '.join(words)}")
        elif first == "accelerate":
            done.append(check_accelerate(words))
        else:
            raise AssertionError(f"no rule for a bash command starting with '{first}' ({' '.join(words)}); "
                                 "add a rule to tests/test_readme.py or a <!-- smoke: ... --> comment before the block")
    return done


# ----------------------------------------------------------------- the tests
def test_the_readme_has_code_blocks_and_every_language_has_a_rule():
    languages = {b.language for b in BLOCKS}
    assert {"python", "bash"} <= languages, "README.md lost its python or bash examples"
    unknown = sorted(languages - set(CODE_LANGUAGES) - set(NOT_RUN) - set(PARSED))
    assert not unknown, f"README blocks tagged {unknown} have no rule in tests/test_readme.py"


@pytest.mark.slow  # about two minutes in all, mostly one interpreter start and two tiny trainings
@pytest.mark.parametrize("block", BLOCKS, ids=[f"line{b.line}-{b.language or 'plain'}" for b in BLOCKS])
def test_readme_block(block: Block, in_workspace, capsys):
    if block.skip is not None:
        pytest.skip(f"README.md line {block.line}: {block.skip}")
    if block.language in NOT_RUN:
        return  # NOT_RUN says why; the block is layout, not code
    if block.language == "yaml":
        import yaml

        yaml.safe_load(block.runs)
        return
    if block.language == "python":
        code, _ = smoke_python(block.runs)
        run_python(code, in_workspace)
        return
    assert block.language == "bash", block.language
    assert run_bash(block.runs, capsys), f"README.md line {block.line}: a bash block without a command"


# ----------------------------------------------------------------- the machinery itself
def test_smoke_rewrite_of_python_calls():
    code, rewritten = smoke_python(
        "from ckdlab import api\nfrom ckdlab.api import distill as d\n"
        "api.finetune_teacher('sst2', profile='quick')\nd('sst2', student='layers:0,1')\n"
        "api.finetune_teacher('sst2', 'quick')\nprint(api.info())\n")
    assert "api.finetune_teacher('sst2', profile='smoke')" in code and "d('sst2', student='layers:0,1', profile='smoke')" in code
    assert "api.finetune_teacher('sst2', 'smoke')" in code and "api.info()" in code
    assert rewritten == ["api.finetune_teacher", "d", "api.finetune_teacher"]


def test_bash_rules():
    commands = bash_commands("make test   # all tests\nckdlab distill --task sst2 \\\n   --profile=paper --student layers:0\n\n# note\n")
    assert commands == [["make", "test"], ["ckdlab", "distill", "--task", "sst2", "--profile=paper", "--student", "layers:0"]]
    assert smoke_ckdlab(commands[1][1:]) == ["distill", "--task", "sst2", "--student", "layers:0", "--profile", "smoke"]
    assert smoke_ckdlab(["info"]) == ["info"]
    assert {"reproduce", "test"} <= make_targets() and "export" not in make_targets()
    with pytest.raises(AssertionError, match="no rule for a bash command starting with 'pip'"):
        run_bash("pip install ckdlab", capsys=None)
    with pytest.raises(AssertionError, match="no Makefile target"):
        run_bash("make no-such-target", capsys=None)
    with pytest.raises(AssertionError, match="does not parse"):
        run_bash("accelerate launch -m ckdlab.cli distill --no-such-flag", capsys=None)
    assert run_bash("ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 -m ckdlab.cli distill --task sst2 "
                    "--student layers:0", capsys=None) == [
        "parsed (accelerate and ckdlab): accelerate launch --multi_gpu --num_processes 2 -m ckdlab.cli distill "
        "--task sst2 --student layers:0"]


def test_smoke_comments_are_read():
    blocks = readme_blocks("<!-- smoke: ckdlab info -->\n```bash\nckdlab info --verbose\n```\n\n"
                           "<!-- smoke-skip: needs a GPU -->\n\n```python\nimport torch\n```\n```\nlayout/\n```\n")
    assert [(b.line, b.language, b.runs, b.skip) for b in blocks] == [
        (2, "bash", "ckdlab info", None), (8, "python", "import torch", "needs a GPU"), (11, "", "layout/", None)]
    with pytest.raises(ValueError, match="needs a reason"):
        readme_blocks("<!-- smoke-skip: -->\n```bash\nmake test\n```\n")
