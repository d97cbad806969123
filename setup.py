"""Package discovery only (metadata lives in pyproject.toml).

Our machinery is the ordinary package ``verlkit``. The reward modules in ``verl/utils/reward_score/``
are not a package of their own: the ``verl.plugins`` entry point (``verlkit.plugin.graft``) loads them
under upstream's ``verl.utils.reward_score.<name>`` names. A source checkout or an editable install
reads them from the repository; a wheel carries a copy as package data under ``verlkit/_grafted/``.
"""

from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

GRAFTED = Path("verl") / "utils" / "reward_score"


class BuildWithGraftedRewards(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # the editable install reads the repository's files
        target = Path(self.build_lib) / "verlkit" / "_grafted" / "utils" / "reward_score"
        target.mkdir(parents=True, exist_ok=True)
        for source in sorted(GRAFTED.glob("*.py")):
            self.copy_file(str(source), str(target / source.name))


setup(
    packages=find_packages(include=["verlkit", "verlkit.*", "data_prep", "data_prep.*", "recipes", "recipes.*"]),
    package_data={"verlkit": ["**/*.json", "**/*.jsonl", "**/*.jinja", "**/*.txt", "**/*.yaml"],
                  "data_prep": ["assets/*", "assets/*/*"], "recipes": ["**/*.yaml"]},
    cmdclass={"build_py": BuildWithGraftedRewards},
)
