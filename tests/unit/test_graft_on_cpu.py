"""The verl.plugins entry point grafts this repository's verl/ tree onto upstream verl."""

from importlib import metadata
from pathlib import Path

import verl
import verl.utils.reward_score as upstream_scores

REPO = Path(__file__).resolve().parents[2]
TREE = REPO / "verl"
UPSTREAM = Path(verl.__file__).resolve().parent


def test_repo_tree_cannot_shadow_upstream():
    # A namespace folder named verl (no __init__.py) always loses to the installed regular package.
    for folder in (TREE, TREE / "utils", TREE / "utils" / "reward_score", TREE / "trainer"):
        assert not (folder / "__init__.py").exists(), folder
    assert UPSTREAM != TREE.resolve()


def test_no_file_of_ours_collides_with_upstream():
    """Upstream always wins a name clash (the finder runs last), so a clash would silently hide our file."""
    clashes = []
    for path in TREE.rglob("*.py"):
        rel = path.relative_to(TREE)
        if rel.name == "__init__.py" or rel.parts[0] == "_graft.py":
            continue
        if (UPSTREAM / rel).exists() or (UPSTREAM / rel.with_suffix("") / "__init__.py").exists():
            clashes.append(str(rel))
    assert clashes == []


def test_reward_modules_import_under_verl_names():
    from verl.utils.reward_score import gsm8k_exact, registry

    assert Path(gsm8k_exact.__file__).resolve() == TREE / "utils" / "reward_score" / "gsm8k_exact.py"
    assert Path(registry.__file__).resolve().parent == TREE / "utils" / "reward_score"
    assert Path(upstream_scores.__file__).resolve().parent == UPSTREAM / "utils" / "reward_score"


def test_entry_point_is_declared():
    names = {ep.name: ep.value for ep in metadata.entry_points(group="verl.plugins")}
    assert names.get("verlkit") == "verlkit.plugin.graft"
