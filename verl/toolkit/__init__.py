"""verlkit's own runtime pieces that are not reward modules: clients at the edge, the served-model
launcher, local model builders. Importable as ``verl.toolkit`` once upstream verl is imported
(the ``verl.plugins`` entry point grafts this tree; see ``docs/extension.md``)."""
