"""The template every method file fills in: the base class and registration (base, registry), the training loop and
recipe (training), declared options (options), the backbones (backbones, sn_nets), what post-hoc detectors share
(features) and training-time attacks (attacks). A method file imports from these modules; nothing here imports a
method file. docs/adding-a-method.md is the guide.
"""
