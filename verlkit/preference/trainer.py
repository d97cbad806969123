"""``PreferenceTrainer``: verl's ``SFTTrainer`` trained on preference data.

verl 0.9.1 has no DPO trainer. This subclass keeps everything of verl's SFT trainer (FSDP/FSDP2
engine, optimizer and schedule, dataloader state, checkpoints, resume, console/wandb tracking) and
changes four things:

* the dataset keeps a preference pair's chosen and rejected sequences together
  (:mod:`verlkit.preference.data`), and the collator pads every rank to the same number of
  sequences (uneven counts would break the engine's gloo all-gathers);
* each rank's batch is ONE engine micro-batch (``use_dynamic_bsz=False``), so a pair never straddles
  two loss calls;
* the loss is :class:`~verlkit.preference.engine.PreferenceEngineLoss`; a reward model
  (``preference.loss=bt``) runs on verl's scalar-head (``value_model``) engine instead of the LM one;
* before the first update, and before a checkpoint is loaded, the same engine computes the frozen
  reference's summed log-probs of every sequence once: the reference is the initial model.

Started by :mod:`verlkit.preference.train`; the objectives are in :mod:`verlkit.preference.losses`.
"""

from __future__ import annotations

import torch
import torch.distributed
from omegaconf import open_dict
from torch.utils.data import DistributedSampler
from torchdata.stateful_dataloader import StatefulDataLoader
from verl.trainer.sft_trainer import SFTTrainer
from verl.workers.engine_workers import TrainingWorker, TrainingWorkerConfig

from verlkit.preference.config import PreferenceConfig, preference_options
from verlkit.preference.data import MAX_SEQS_PER_ROW, PreferenceCollator, PreferenceDataset
from verlkit.preference.engine import compute_reference, install_loss


class PreferenceTrainer(SFTTrainer):
    """verl's SFT trainer with preference data, the preference loss and a precomputed reference.

    ``config`` is the composed ``preference_trainer`` config: verl's ``sft_trainer_engine`` plus the
    ``preference`` group (:class:`~verlkit.preference.config.PreferenceConfig`).
    """

    def __init__(self, config):
        self.pref_opts: PreferenceConfig = preference_options(config)
        world = torch.distributed.get_world_size()
        sp = int(config.engine.get("ulysses_sequence_parallel_size", 1) or 1)
        if sp != 1:
            raise ValueError("the preference trainer needs engine.ulysses_sequence_parallel_size=1")
        if config.data.train_batch_size % world:
            raise ValueError(f"data.train_batch_size={config.data.train_batch_size} must be divisible by {world} processes")
        self.rows_per_rank = MAX_SEQS_PER_ROW * (config.data.train_batch_size // world)
        with open_dict(config):
            # One micro-batch per rank and step: pairs stay together, row order is kept.
            config.data.use_dynamic_bsz = False
            config.data.micro_batch_size_per_gpu = self.rows_per_rank
            config.data.pad_mode = "no_padding"
        super().__init__(config)

    def _build_dataset(self):
        data = self.config.data
        tokenizer = self.model_config.tokenizer
        kinds = self.pref_opts.row_kinds()
        self.train_dataset = PreferenceDataset(
            data.train_files, tokenizer, data, max_samples=data.get("train_max_samples", -1), kinds=kinds
        )
        self.val_dataset = None
        if data.get("val_files"):
            self.val_dataset = PreferenceDataset(
                data.val_files, tokenizer, data, max_samples=data.get("val_max_samples", -1), kinds=kinds
            )

    def _build_engine(self):
        if self.pref_opts.model_type == "language_model":
            super()._build_engine()
        else:
            # verl's SFT trainer always builds a language-model engine; a reward model needs the
            # scalar-head (critic) engine, otherwise the same worker and configs.
            self.training_client = TrainingWorker(
                config=TrainingWorkerConfig(
                    model_type=self.pref_opts.model_type,
                    model_config=self.model_config,
                    engine_config=self.engine_config,
                    optimizer_config=self.optimizer_config,
                    checkpoint_config=self.checkpoint_config,
                    profiler_config=self.profiler_config,
                )
            )
            self.engine = self.training_client.engine
        self.loss_fn = install_loss(self.training_client, self.pref_opts)

    def _build_dataloader(self):
        dp_rank = self.engine.get_data_parallel_rank()
        dp_size = self.engine.get_data_parallel_size()
        self.global_batch_size = self.config.data.train_batch_size
        self.train_batch_size_per_dp = self.global_batch_size // dp_size
        pad_id = self.model_config.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.model_config.tokenizer.eos_token_id
        topk = self.pref_opts.kd_topk if self.pref_opts.uses_kl else 0
        self.collate_fn = PreferenceCollator(self.rows_per_rank, pad_id, topk=topk)

        def loader(dataset, shuffle: bool):
            sampler = DistributedSampler(dataset, shuffle=shuffle, num_replicas=dp_size, rank=dp_rank, drop_last=True)
            dl = StatefulDataLoader(
                dataset=dataset,
                batch_size=self.train_batch_size_per_dp,
                sampler=sampler,
                collate_fn=self.collate_fn,
                num_workers=self.config.data.num_workers,
                pin_memory=False,
                drop_last=True,
            )
            return sampler, dl

        if len(self.train_dataset) < self.global_batch_size:
            raise ValueError(
                f"{len(self.train_dataset)} training rows are fewer than data.train_batch_size={self.global_batch_size}"
            )
        self.train_sampler, self.train_dataloader = loader(self.train_dataset, shuffle=True)
        if self.val_dataset is not None:
            self.val_sampler, self.val_dataloader = loader(self.val_dataset, shuffle=False)
        else:
            self.val_dataloader = None

    def _build_ckpt_handler(self):
        # The engine holds the initial weights here (a checkpoint is loaded right after): the
        # frozen reference is exactly this model, on resume too.
        if self.pref_opts.needs_reference:
            for dataset in (self.train_dataset, self.val_dataset):
                if dataset is not None:
                    dataset.ref_logps, dataset.ref_topk = compute_reference(
                        self.training_client,
                        dataset,
                        self.collate_fn,
                        self.pref_opts,
                        batch_size=self.train_batch_size_per_dp,
                        use_remove_padding=self.config.model.use_remove_padding,
                    )
        super()._build_ckpt_handler()
