"""The ``preference.*`` options and the hydra config ``preference_trainer`` they are composed in:
verl's SFT config plus the typed ``preference`` group, composable by a recipe's own config."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra.errors import ConfigCompositionException
from omegaconf.errors import OmegaConfBaseException

from verlkit.preference.config import PreferenceConfig, PreferenceLoss
from verlkit.preference.train import CONFIG_DIR, CONFIG_NAME, compose_config

REPO = Path(__file__).resolve().parents[3]


# ---- the options ------------------------------------------------------------------------------------


def test_options_are_validated():
    with pytest.raises(ValueError, match="preference.loss"):
        PreferenceConfig(loss="ipo")
    with pytest.raises(ValueError, match="beta"):
        PreferenceConfig(beta=0)
    with pytest.raises(ValueError, match=r"preference\.kd_lambda=1\.5: must be in \[0, 1\]"):
        PreferenceConfig(kd_lambda=1.5)
    with pytest.raises(ValueError, match=r"preference\.kd_topk=0"):
        PreferenceConfig(kd_topk=0)
    assert PreferenceConfig(loss="dpo").row_kinds() == ("pair",)
    assert set(PreferenceConfig(loss="lcdpo").row_kinds()) == {"pair", "near_scope", "out_of_scope"}


def test_reward_model_options_select_the_value_engine_and_skip_the_reference():
    bt = PreferenceConfig(loss="bt")
    assert bt.model_type == "value_model" and not bt.needs_reference and bt.row_kinds() == ("pair",)
    assert PreferenceConfig(loss="dpo").needs_reference and PreferenceConfig(loss="lcdpo").needs_reference
    assert not PreferenceConfig(loss="sft").needs_reference
    assert PreferenceConfig(loss="dpo").model_type == "language_model"


def test_only_lcdpo_with_a_positive_lambda_uses_the_kl_term():
    assert PreferenceConfig(loss="lcdpo", kd_lambda=0.5).uses_kl
    assert not PreferenceConfig(loss="lcdpo").uses_kl and not PreferenceConfig(loss="dpo", kd_lambda=0.5).uses_kl
    assert PreferenceConfig(loss="sft_neg", sigma_soft=0.5, sigma_hard=0.25).term_weights() == {
        "chosen_nll": 1.0, "soft_nll": 0.5, "hard_nll": 0.25}  # fmt: skip


# ---- composition ------------------------------------------------------------------------------------


def test_the_config_is_verls_sft_config_plus_the_preference_defaults():
    cfg = compose_config(["preference.loss=lcdpo", "preference.sigma_hard=0.3", "data.train_batch_size=8", "model.path=/x"])
    assert cfg.preference.loss == "lcdpo" and cfg.preference.sigma_hard == 0.3 and cfg.preference.beta == 0.1
    assert cfg.data.train_batch_size == 8 and cfg.model.path == "/x"
    # verl's own sft_trainer_engine values, untouched
    assert cfg.data.max_length == 1024 and cfg.trainer.resume_mode == "auto" and cfg.engine.strategy == "fsdp"
    defaults = compose_config()
    assert dict(defaults.preference) == {"loss": PreferenceLoss.dpo, "beta": 0.1, "sigma_soft": 0.2, "sigma_hard": 0.1,
                                         "kd_lambda": 0.0, "kd_temperature": 1.0, "kd_topk": 16}  # fmt: skip


@pytest.mark.parametrize(
    "override, message",
    [
        ("preference.betta=0.2", r"Key 'betta' not in 'PreferenceConfig'"),
        ("+preference.betta=0.2", r"Key 'betta' not in 'PreferenceConfig'"),
        ("preference.loss=ipo", r"Invalid value 'ipo', expected one of \[sft, sft_neg, dpo, lcdpo, bt\]"),
        ("preference.kd_topk=many", r"Value 'many' of type 'str' could not be converted to Integer"),
        ("trainer.total_epocs=2", r"Key 'total_epocs' is not in struct"),
    ],
)
def test_unknown_keys_and_mistyped_values_fail_composition(override, message):
    # hydra wraps OmegaConf's error; a key appended with "+" is refused by the options check after it
    with pytest.raises((ConfigCompositionException, OmegaConfBaseException)) as error:
        compose_config([override])
    text = f"{error.value} {error.value.__cause__}"
    assert re.search(message, text), text


def test_out_of_range_values_fail_with_the_options_name():
    with pytest.raises(ValueError, match=r"preference\.beta=-1\.0: must be > 0"):
        compose_config(["preference.beta=-1"])


def _recipe_config(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    recipe = {
        "defaults": ["preference_trainer", "_self_"],
        "preference": {"loss": "lcdpo", "sigma_hard": 0.3},
        "data": {"train_batch_size": 12},
        "trainer": {"project_name": "my-recipe"},
    }
    (directory / "my_run.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return directory


def test_a_recipe_config_in_another_directory_composes_on_preference_trainer(tmp_path):
    recipe_dir = _recipe_config(tmp_path / "recipe")
    cfg = compose_config(["preference.beta=0.2", "model.path=/m"], config_dir=recipe_dir, config_name="my_run")
    assert cfg.preference.loss == "lcdpo" and cfg.preference.sigma_hard == 0.3 and cfg.preference.beta == 0.2
    assert cfg.preference.sigma_soft == 0.2  # the default, from the schema
    assert cfg.data.train_batch_size == 12 and cfg.trainer.project_name == "my-recipe" and cfg.model.path == "/m"
    assert cfg.data.max_length == 1024  # from verl's sft_trainer_engine
    (recipe_dir / "typo.yaml").write_text(yaml.safe_dump({"defaults": ["preference_trainer", "_self_"],
                                                          "preference": {"sigma_hadr": 0.3}}))  # fmt: skip
    with pytest.raises(ConfigCompositionException) as error:
        compose_config(config_dir=recipe_dir, config_name="typo")
    assert "sigma_hadr" in f"{error.value} {error.value.__cause__}"


def test_the_entry_point_composes_a_recipe_config_from_the_command_line(tmp_path):
    """``python -m verlkit.preference.train --config-path DIR --config-name NAME ...`` (hydra's --cfg job
    prints the composed config instead of training), and the same with --config-dir."""
    recipe_dir = _recipe_config(tmp_path / "recipe")
    for selection in (["--config-path", str(recipe_dir)], ["--config-dir", str(recipe_dir)]):
        out = subprocess.run(
            [sys.executable, "-m", "verlkit.preference.train", *selection, "--config-name", "my_run", "--cfg", "job",
             "model.path=/m", "preference.kd_lambda=0.5"],
            capture_output=True, text=True, timeout=300, cwd=tmp_path,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-3000:]
        cfg = yaml.safe_load(out.stdout)
        assert cfg["preference"]["loss"] == "lcdpo" and cfg["preference"]["kd_lambda"] == 0.5
        assert cfg["data"]["train_batch_size"] == 12 and cfg["model"]["path"] == "/m"
    assert (CONFIG_DIR / f"{CONFIG_NAME}.yaml").is_file()
