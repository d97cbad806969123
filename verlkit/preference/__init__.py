"""Offline preference optimisation on verl's SFT trainer engine: DPO, C3PO's LCDPO, SFT baselines and
Bradley–Terry reward models (docs/preference-trainer.md).

Modules, bottom to top (this package imports none of them; only ``trainer`` imports verl's trainer):

* ``config``: the ``preference.*`` options (:class:`~verlkit.preference.config.PreferenceConfig`);
* ``data``: the preference dataset and collator;
* ``losses``: the objectives as pure torch functions (no verl);
* ``engine``: the adapter to verl's training engine (loss hook, reference pass);
* ``trainer``: ``PreferenceTrainer``, a subclass of verl's ``SFTTrainer``;
* ``train``: the entry point ``python -m verlkit.preference.train`` and the hydra config
  ``preference_trainer`` (``config/preference_trainer.yaml``), ``compose_config`` for tests;
* ``export``: a reward-model checkpoint as ``*ForSequenceClassification``, and ``latest_checkpoint``.
"""
