"""The documented commands: every shell block of README.md and docs/ is run here, or says why it is not.

A block preceded by the line `<!-- runnable -->` is executed; one preceded by `<!-- not-run: reason -->` is
not (it starts a UI that runs until Ctrl-C, needs a cluster, or takes many minutes). Any other shell block
fails the test, so no documented command is silently left untested (docs/development.md).
"""

import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = "<!-- runnable -->"
NOT_RUN = re.compile(r"<!-- not-run: \S.* -->")
SHELL_LANGUAGES = {"sh", "bash", "shell", "console"}
FENCE = re.compile(r"^(\s*)```(\S*)")
# A block that runs longer than this hangs (the longest documented command takes under a minute here).
BLOCK_TIMEOUT_SECONDS = 300
# The files whose blocks train and predict many partitions: run with the `system` tests.
SLOW_DOCUMENTS = {"docs/model-lifecycle.md", "docs/operations.md"}


@dataclass(frozen=True)
class Block:
    """One fenced code block: where it starts, its language, its marker and its text."""

    document: Path
    line: int
    language: str
    marker: str | None
    code: str

    @property
    def where(self) -> str:
        """`path:line` of the opening fence, relative to the repository."""
        return f"{self.document.relative_to(ROOT)}:{self.line}"


def read_blocks(document: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, each with the marker comment on the nearest line above it."""
    lines = document.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if fence is None:
            index += 1
            continue
        indent = len(fence.group(1))
        end = index + 1
        while end < len(lines) and not lines[end].strip().startswith("```"):
            end += 1
        above = next((line.strip() for line in reversed(lines[:index]) if line.strip()), "")
        marker = "runnable" if above == RUNNABLE else "not-run" if NOT_RUN.fullmatch(above) else None
        code = "\n".join(line[indent:] for line in lines[index + 1 : end])
        blocks.append(Block(document, index + 1, fence.group(2), marker, code))
        index = end + 1
    return blocks


def runnable_blocks(document: Path) -> list[Block]:
    return [block for block in read_blocks(document) if block.marker == "runnable"]


def test_blocks_are_read_with_their_line_marker_and_text(tmp_path: Path) -> None:
    document = tmp_path / "guide.md"
    document.write_text(
        "# Guide\n\n<!-- runnable -->\n```bash\necho one\n```\n\n- a list item:\n\n"
        "  <!-- not-run: needs a cluster -->\n  ```sh\n  kubectl get pods\n  ```\n\n"
        "```bash\nmake demo\n```\n\n<!-- runnable -->\n```python\nprint(1)\n```\n",
        encoding="utf-8",
    )
    blocks = [(block.line, block.language, block.marker, block.code) for block in read_blocks(document)]
    assert blocks == [
        (4, "bash", "runnable", "echo one"),
        (11, "sh", "not-run", "kubectl get pods"),
        (15, "bash", None, "make demo"),
        (20, "python", "runnable", "print(1)"),
    ]


def test_every_shell_block_is_runnable_or_says_why_not() -> None:
    unmarked = [
        block.where
        for document in DOCUMENTS
        for block in read_blocks(document)
        if block.language in SHELL_LANGUAGES and block.marker is None
    ]
    assert not unmarked, f"shell blocks with neither {RUNNABLE} nor <!-- not-run: reason -->: {unmarked}"


def test_only_shell_blocks_are_marked_runnable() -> None:
    misplaced = [
        block.where
        for document in DOCUMENTS
        for block in read_blocks(document)
        if block.marker == "runnable" and block.language not in SHELL_LANGUAGES
    ]
    assert not misplaced, f"{RUNNABLE} before a block that is not a shell block: {misplaced}"


def test_the_readme_and_every_guide_are_covered() -> None:
    names = {str(document.relative_to(ROOT)) for document in DOCUMENTS if runnable_blocks(document)}
    assert {"README.md", "docs/operations.md", "docs/model-lifecycle.md", "docs/monitoring.md"} <= names


def temp_project(root: Path) -> dict[str, str]:
    """A project folder of its own (instance, workspace, Makefile, `.venv`) and the environment its commands get.

    The commands run with the working directory there and every path setting pointing into it, so the
    repository's data/ and dagster_home/ are never touched; the code is the repository's (PYTHONPATH).
    """
    (root / "dagster_home").mkdir(parents=True)
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", root / "dagster_home" / "dagster.yaml")
    for name in ("workspace.yaml", "Makefile", ".env.example"):
        shutil.copy(ROOT / name, root / name)
    (root / ".venv").symlink_to(Path(sys.prefix))
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("BATCH_PREDICT_", "DAGSTER_", "MLFLOW_")) and key != "VIRTUAL_ENV"
    }
    data = root / "data"
    env.update(
        PATH=f"{Path(sys.prefix) / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        DAGSTER_HOME=str(root / "dagster_home"),
        BATCH_PREDICT_WAREHOUSE=str(data / "warehouse.duckdb"),
        BATCH_PREDICT_STAGING=str(data / "staging"),
        BATCH_PREDICT_LANDING=str(data / "landing"),
        BATCH_PREDICT_LABELS=str(data / "labels"),
        BATCH_PREDICT_MODELS=str(data / "models"),
    )
    return env


def run_block(block: Block, cwd: Path, env: dict[str, str]) -> None:
    """Run one block in a fresh bash, in its own process group, that stops at the first failing command.

    A block past the timeout has its whole process group killed (the runs it started too). A failure names
    the block's file and line, with the end of its output.
    """
    process = subprocess.Popen(
        ["bash", "-c", "set -euo pipefail\n" + block.code],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=BLOCK_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"{block.where}: did not finish within {BLOCK_TIMEOUT_SECONDS}s\n{stderr[-3000:]}")
    if process.returncode != 0:
        pytest.fail(
            f"{block.where}: exit {process.returncode}\n--- block\n{block.code}\n"
            f"--- stdout (end)\n{stdout[-3000:]}\n--- stderr (end)\n{stderr[-3000:]}"
        )


def document_params() -> list[object]:
    params: list[object] = []
    for document in DOCUMENTS:
        name = str(document.relative_to(ROOT))
        if not runnable_blocks(document):
            continue
        marks = [pytest.mark.system] if name in SLOW_DOCUMENTS else []
        params.append(pytest.param(document, id=name, marks=marks))
    return params


@pytest.mark.parametrize("document", document_params())
def test_the_runnable_blocks_of_a_document_exit_0(document: Path, tmp_path: Path) -> None:
    """In document order, in one fresh project per document: files a block writes are there for the next."""
    project = tmp_path / "project"
    env = temp_project(project)
    for block in runnable_blocks(document):
        run_block(block, project, env)
