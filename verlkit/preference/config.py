"""The ``preference.*`` options of the preference trainer, as an OmegaConf structured config.

:class:`PreferenceConfig` is the schema of the ``preference`` group of the hydra config
``preference_trainer`` (see :mod:`verlkit.preference.train`): OmegaConf checks key names and types
(and ``loss`` against :class:`PreferenceLoss`) while hydra composes, so a misspelt key or a value of
the wrong type fails before anything starts. ``OmegaConf.to_object`` builds the dataclass, and
``__post_init__`` adds the range checks a type cannot express (verl's own config dataclasses do the
same). Defaults: the C3PO reference config (``configs/config_lcdpo.json``).

No torch, hydra or verl import here: the pure losses use these options.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class PreferenceLoss(str, Enum):
    """The objectives (see docs/preference-trainer.md). A ``str`` enum: members equal their names."""

    sft = "sft"
    sft_neg = "sft_neg"
    dpo = "dpo"
    lcdpo = "lcdpo"
    bt = "bt"

    def __str__(self) -> str:  # "lcdpo" in messages and logs, not "PreferenceLoss.lcdpo"
        return self.value


LOSSES = tuple(loss.value for loss in PreferenceLoss)


@dataclass
class PreferenceConfig:
    """The ``preference`` config group."""

    loss: PreferenceLoss = PreferenceLoss.dpo
    beta: float = 0.1
    sigma_soft: float = 0.2
    sigma_hard: float = 0.1
    kd_lambda: float = 0.0
    kd_temperature: float = 1.0
    # Reference tokens kept per position for the KL term (only used when kd_lambda > 0).
    kd_topk: int = 16

    def __post_init__(self) -> None:
        # OmegaConf hands over a PreferenceLoss; Python callers may pass the name. The enum refuses
        # an unknown one; the message names the option.
        try:
            self.loss = PreferenceLoss(self.loss)
        except ValueError:
            raise ValueError(f"preference.loss={self.loss!r}: expected one of {LOSSES}") from None
        if not self.beta > 0:
            raise ValueError(f"preference.beta={self.beta}: must be > 0")
        if self.sigma_soft < 0 or self.sigma_hard < 0:
            raise ValueError(
                f"preference.sigma_soft={self.sigma_soft}, preference.sigma_hard={self.sigma_hard}: must be >= 0"
            )
        if not 0.0 <= self.kd_lambda <= 1.0:
            raise ValueError(f"preference.kd_lambda={self.kd_lambda}: must be in [0, 1]")
        if not self.kd_temperature > 0:
            raise ValueError(f"preference.kd_temperature={self.kd_temperature}: must be > 0")
        if self.kd_topk < 1:
            raise ValueError(f"preference.kd_topk={self.kd_topk}: must be >= 1")

    @property
    def uses_kl(self) -> bool:
        """Whether the objective has a KL-to-reference term (then reference top-k are needed)."""
        return self.loss == PreferenceLoss.lcdpo and self.kd_lambda > 0

    @property
    def needs_reference(self) -> bool:
        """Whether the objective compares with the frozen initial model (DPO-style margins)."""
        return self.loss in (PreferenceLoss.dpo, PreferenceLoss.lcdpo)

    @property
    def model_type(self) -> str:
        """verl engine model type: a scalar head for reward models, the LM head otherwise."""
        return "value_model" if self.loss == PreferenceLoss.bt else "language_model"

    def row_kinds(self) -> tuple[str, ...]:
        """Row kinds of the data file this objective reads (the others are not even tokenized)."""
        if self.loss in (PreferenceLoss.sft_neg, PreferenceLoss.lcdpo):
            return ("pair", "near_scope", "out_of_scope")
        return ("pair",)

    def term_weights(self) -> dict[str, float]:
        """Weight of each mean term (see :func:`verlkit.preference.losses.objective_terms`)."""
        if self.loss == PreferenceLoss.sft:
            return {"chosen_nll": 1.0}
        if self.loss == PreferenceLoss.sft_neg:
            return {"chosen_nll": 1.0, "soft_nll": self.sigma_soft, "hard_nll": self.sigma_hard}
        if self.loss == PreferenceLoss.dpo:
            return {"dpo": 1.0}
        if self.loss == PreferenceLoss.bt:
            return {"bt": 1.0}
        return {"dpo": 1.0, "soft_kd": self.sigma_soft, "hard_kd": self.sigma_hard}


def preference_options(config) -> PreferenceConfig:
    """The checked options of a composed trainer config (its ``preference`` node).

    The node's values are merged into a fresh schema because hydra's ``+preference.<key>=...``
    appends keys past the schema (and ``OmegaConf.to_object`` would drop them silently); the merge
    refuses them.
    """
    from omegaconf import OmegaConf

    values = {"preference": OmegaConf.to_container(config.preference, resolve=True)}
    checked = OmegaConf.merge({"preference": OmegaConf.structured(PreferenceConfig)}, values)
    return OmegaConf.to_object(checked.preference)
