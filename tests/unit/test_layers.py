"""Dependencies point one way: the layer table in docs/architecture.md, enforced on every import.

import-linter cannot see our reward modules (they live under upstream's ``verl.utils.reward_score``
names, which only our plugin resolves), so the check reads the source with ``ast`` instead: every
``import`` and ``from ... import`` of every module of ours, top-level or inside a function, is mapped
to the layer of the package it names.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GRAFTED = ("verl", "utils", "reward_score")
_ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*`([\w.]+)`\s*\|")


def layer_table(repo: Path) -> dict[str, int]:
    """``{package: layer}`` from the table in docs/architecture.md."""
    table = {}
    for line in (repo / "docs" / "architecture.md").read_text().splitlines():
        match = _ROW.match(line)
        if match:
            table[match.group(2)] = int(match.group(1))
    return table


def our_modules(repo: Path) -> dict[str, Path]:
    """Dotted name -> file of every module of ours that has a layer (tests and benchmarks have none)."""
    modules = {}
    for top in ("verlkit", "data_prep", "recipes"):
        for path in sorted((repo / top).rglob("*.py")):
            parts = list(path.relative_to(repo).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            if parts != ["verlkit"]:  # the root package only holds the package docstring
                modules[".".join(parts)] = path
    for path in sorted(repo.joinpath(*GRAFTED).glob("*.py")):
        modules[".".join([*GRAFTED, path.stem])] = path
    return modules


def layer_of(module: str, table: dict[str, int]) -> tuple[str, int] | None:
    """(package, layer) of the longest table entry that is ``module`` or a parent of it."""
    best = None
    for package, layer in table.items():
        if (module == package or module.startswith(package + ".")) and (best is None or len(package) > len(best[0])):
            best = (package, layer)
    return best


def imported_names(path: Path, module: str) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) of every import statement in the file; relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((node.lineno, base, [alias.name for alias in node.names]))
    return found


@dataclass(frozen=True)
class Violation:
    file: str
    line: int
    importer: str
    imported: str
    why: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.importer} imports {self.imported}: {self.why}"


def check(repo: Path) -> list[Violation]:
    table = layer_table(repo)
    modules = our_modules(repo)
    violations = []
    for module, path in modules.items():
        source = layer_of(module, table)
        if source is None:
            violations.append(Violation(str(path.relative_to(repo)), 0, module, "-", "module has no layer in docs/architecture.md"))
            continue
        for line, base, names in imported_names(path, module):
            targets = [f"{base}.{n}" for n in names if f"{base}.{n}" in modules] or [base]
            for target in targets:
                where = str(path.relative_to(repo))
                if source[1] == 1 and (target == "verl" or target.startswith("verl.")):
                    violations.append(Violation(where, line, module, target, "a leaf imports nothing of verl"))
                    continue
                if target not in modules and not any(m.startswith(target + ".") for m in modules):
                    continue  # not ours
                dest = layer_of(target, table)
                if dest is None:
                    continue
                if dest[1] > source[1]:
                    why = f"layer {source[1]} ({source[0]}) may not import layer {dest[1]} ({dest[0]})"
                    violations.append(Violation(where, line, module, target, why))
                elif source[1] == 1 and dest[0] != source[0]:
                    violations.append(Violation(where, line, module, target, "a leaf imports nothing else of ours"))
    return violations


def test_every_import_points_down_the_layer_table():
    violations = check(REPO)
    assert not violations, "imports against docs/architecture.md:\n" + "\n".join(map(str, violations))


def test_the_table_names_every_package_of_ours():
    table = layer_table(REPO)
    assert table["verlkit.clients"] == 1 and table["recipes"] == 9  # the table was read at all
    packages = {p.name for p in (REPO / "verlkit").iterdir() if (p / "__init__.py").is_file()}
    modules = {p.stem for p in (REPO / "verlkit").glob("*.py") if p.stem != "__init__"}
    unlisted = sorted(f"verlkit.{n}" for n in packages | modules if f"verlkit.{n}" not in table)
    assert unlisted == []


def _plant(tmp_path: Path, files: dict[str, str]) -> Path:
    repo = tmp_path / "repo"
    (repo / "docs").mkdir(parents=True)
    shutil.copy(REPO / "docs" / "architecture.md", repo / "docs" / "architecture.md")
    for rel, text in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    for top in ("verlkit", "data_prep", "recipes"):
        (repo / top).mkdir(exist_ok=True)
    return repo


def test_a_planted_upward_import_fails(tmp_path):
    repo = _plant(tmp_path, {
        "verlkit/__init__.py": "",
        "verlkit/clients/__init__.py": "",
        "verlkit/clients/llm.py": "def f():\n    from recipes.rubric import config\n",
        "recipes/__init__.py": "",
        "recipes/rubric/__init__.py": "",
        "recipes/rubric/config.py": "from verlkit.clients import llm\n",
    })
    found = check(repo)
    assert [(v.file, v.line, v.imported) for v in found] == [("verlkit/clients/llm.py", 2, "recipes.rubric.config")]
    assert "layer 1 (verlkit.clients) may not import layer 9 (recipes)" in found[0].why


def test_a_reward_module_importing_the_registry_fails(tmp_path):
    repo = _plant(tmp_path, {
        "verl/utils/reward_score/registry.py": "",
        "verl/utils/reward_score/mine.py": "from verl.utils.reward_score.registry import RewardOptionsError\n",
        "verl/utils/reward_score/other.py": "from verl.utils.reward_score import mine, gsm8k\n",
    })
    found = check(repo)
    assert [(v.file, v.imported) for v in found] == [("verl/utils/reward_score/mine.py", "verl.utils.reward_score.registry")]


def test_leaves_import_neither_verl_nor_other_leaves(tmp_path):
    repo = _plant(tmp_path, {
        "verlkit/__init__.py": "",
        "verlkit/records.py": "import verl.protocol\n",
        "verlkit/runs/__init__.py": "from verlkit import records\nfrom verlkit.runs import summary\n",
        "verlkit/runs/summary.py": "",
    })
    found = sorted((v.file, v.imported, v.why) for v in check(repo))
    assert found == [
        ("verlkit/records.py", "verl.protocol", "a leaf imports nothing of verl"),
        ("verlkit/runs/__init__.py", "verlkit.records", "a leaf imports nothing else of ours"),
    ]


# Command-line tools a recipe or a user runs often: they must not pay for `import verl` (~5 s here).
TOOLS_WITHOUT_VERL = [
    "verlkit.serving",
    "verlkit.models.local",
    "verlkit.cpu_profile.overrides",
    "verlkit.runs.summary",
    "verlkit.runs.advantages",
    "verlkit.clients.llm",
    "verlkit.records",
    "data_prep.gsm8k",
]


@pytest.mark.parametrize("module", TOOLS_WITHOUT_VERL)
def test_command_line_tools_start_without_importing_upstream_verl(module):
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m == 'verl' or m.startswith('verl.')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
