"""Hydra config fragments of the CPU profile (``pkg://verlkit.cpu_profile.config``); see ``cpu_profile/``."""
