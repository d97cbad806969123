"""Package discovery only (metadata lives in pyproject.toml).

The repository's ``verl/`` folder has no ``__init__.py`` at its top levels, so it can never shadow
upstream verl. It is shipped under its own import name, ``verlkit_tree``, and the ``verl.plugins``
entry point (``verlkit_tree._graft``) resolves ``verl.<name>`` to these files at run time.
"""

from pathlib import Path

from setuptools import setup

TREE = "verl"
SHIP_AS = "verlkit_tree"


def tree_packages():
    root = Path(__file__).parent / TREE
    found = [SHIP_AS]
    for path in sorted(root.rglob("*")):
        if path.is_dir() and "__pycache__" not in path.parts:
            found.append(".".join([SHIP_AS, *path.relative_to(root).parts]))
    return found


setup(
    packages=[*tree_packages(), "data_prep"],
    package_dir={SHIP_AS: TREE, "data_prep": "data_prep"},
    package_data={SHIP_AS: ["**/*.json", "**/*.jinja", "**/*.txt", "**/*.jsonl"], "data_prep": ["assets/*", "assets/*/*"]},
)
