"""trainer: the thin, real trainer that runs any order of D, P, Q, E and records what it measured.

Its configs (:mod:`trainer.config`) and file formats (:mod:`trainer.record`, the run record;
:mod:`trainer.profile_format`, the stage profile) are torch-free: the simulator and the CLI import
them freely. The modules that train (data, stages, quant, loop, chain, profile) import torch, and
the simulator imports them only when it actually trains (``confirm``).
"""
