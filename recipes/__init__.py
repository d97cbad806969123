"""Recipes: one Python driver per recipe (``python -m recipes.<recipe>``; the ``run_*.sh`` scripts exec
it), the shared orchestration in :mod:`recipes.driver`, configs composed by :mod:`recipes.compose`
from ``recipes/<recipe>/config/*.yaml``. See docs/recipes.md."""


def format_table(rows: list[tuple[str, ...]] | list[list[str]]) -> str:
    """Rows of strings (the first is the header) as left-aligned columns for a recipe's end report."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows)
