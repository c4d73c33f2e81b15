"""Run ``python -m ckdlab.cli`` in real child processes, fast.

Starting Python and importing torch, transformers and ckdlab takes seconds per process, which a
table of thirty CLI cases cannot afford. One helper process pays the imports once, then forks a
child per command; the child sets its environment and working directory, points its stdout and
stderr at files, and runs ``ckdlab.cli`` as ``__main__`` exactly as ``python -m ckdlab.cli`` does
(an uncaught exception prints its traceback and exits 1). Exit codes, stderr and signals are the
child's own, so a test can interrupt or kill a run at any point.

A request may carry ``hook``: Python source the child executes before the CLI (tests use it to
make the child signal itself at a chosen training step); it never runs in the test process.
"""
from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, os, runpy, signal, sys, traceback
import ckdlab.api, ckdlab.engine.config  # noqa: F401  (the imports every child shares; not ckdlab.cli, run as __main__)

answers = os.fdopen(int(sys.argv[1]), "w", buffering=1)
for line in sys.stdin:
    request = json.loads(line)
    if "wait" in request:
        _, status = os.waitpid(request["wait"], 0)
        answers.write(json.dumps({"code": os.waitstatus_to_exitcode(status)}) + "\n")
        continue
    pid = os.fork()
    if pid:
        answers.write(json.dumps({"pid": pid}) + "\n")
        continue
    code = 1
    try:
        # A command typed in a terminal gets Python's Ctrl-C handler; a test suite started in the
        # background (nohup, '&' in a script) inherits SIGINT ignored, which a real user never has.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.chdir(request["cwd"])
        for name in request["unset"]:
            os.environ.pop(name, None)
        os.environ.update(request["env"])
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
        sys.argv = ["ckdlab", *request["argv"]]
        if request.get("hook"):
            exec(request["hook"], {"__name__": "hook"})
        try:
            runpy.run_module("ckdlab.cli", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
            if not isinstance(stop.code, (int, type(None))):
                print(stop.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
"""


def child_environment() -> dict[str, str]:
    """The environment every child starts from: offline, one thread, this checkout first on the path."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", MPLBACKEND="Agg",
               OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    return env


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


class CliProcesses:
    """The helper process; :meth:`start` forks a CLI child, :meth:`wait` collects it, :meth:`run` does both."""

    def __init__(self) -> None:
        read, write = os.pipe()
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(write)], stdin=subprocess.PIPE, text=True, cwd=ROOT,
            env=child_environment(), pass_fds=(write,),
        )
        os.close(write)
        self._answers = os.fdopen(read, "r")
        self._files: dict[int, tuple[str, str]] = {}

    def _ask(self, request: dict) -> dict:
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()
        line = self._answers.readline()
        if not line:
            raise RuntimeError(f"the CLI helper process died (exit {self._proc.poll()})")
        return json.loads(line)

    def start(self, argv: list[str], env: dict[str, str] | None = None, cwd: str | Path | None = None,
              unset: tuple[str, ...] = (), hook: str | None = None) -> int:
        """Fork ``ckdlab <argv>``; returns the child's pid."""
        out = tempfile.NamedTemporaryFile(prefix="ckdlab-cli-", suffix=".out", delete=False).name
        err = tempfile.NamedTemporaryFile(prefix="ckdlab-cli-", suffix=".err", delete=False).name
        pid = self._ask({"argv": [str(a) for a in argv], "env": env or {}, "cwd": str(cwd or ROOT), "unset": list(unset),
                         "stdout": out, "stderr": err, "hook": hook})["pid"]
        self._files[pid] = (out, err)
        return pid

    def wait(self, pid: int) -> Result:
        code = self._ask({"wait": pid})["code"]
        out, err = self._files.pop(pid)
        texts = [Path(path).read_text(encoding="utf-8", errors="replace") for path in (out, err)]
        for path in (out, err):
            os.unlink(path)
        return Result(code, *texts)

    def run(self, argv: list[str], **kwargs) -> Result:
        return self.wait(self.start(argv, **kwargs))

    def close(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            self._proc.wait(timeout=60)
        self._answers.close()


_SHARED: CliProcesses | None = None


def shared_cli() -> CliProcesses:
    """One helper process for the whole test session (both CLI test modules use it)."""
    global _SHARED
    if _SHARED is None:
        _SHARED = CliProcesses()
        atexit.register(_SHARED.close)  # the helper ends with the test session, never outlives it
    return _SHARED


def folders_env(root: Path) -> dict[str, str]:
    """Runs, results and figures folders of one CLI case, under ``root``."""
    return {"CKDLAB_RUNS": str(root / "runs"), "CKDLAB_RESULTS": str(root / "results"), "CKDLAB_FIGURES": str(root / "figures")}


def files_under(*folders: Path) -> list[str]:
    """Every file (not folder) under ``folders``, as sorted paths: what a failed command must not leave."""
    found = []
    for folder in folders:
        if folder.is_file():
            found.append(str(folder))
        elif folder.is_dir():
            found += [str(p) for p in folder.rglob("*") if p.is_file()]
    return sorted(found)
