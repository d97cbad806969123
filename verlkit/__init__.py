"""verlkit: verifier and calibration rewards, C3PO and preference pipelines on upstream verl 0.9.1.

Sub-packages by layer (bottom to top; each imports only from the ones before it, see
docs/architecture.md): ``records``, ``clients``, ``models``, ``runs`` (leaves); the reward modules in
``verl/utils/reward_score/`` and their registry; ``serving``; ``plugin`` and ``cpu_profile`` (the only
code that hooks into verl); ``preference`` (trainer); ``c3po`` and ``evaluation``. Importing this
package imports nothing of upstream verl.
"""
