#!/usr/bin/env bash
# Regenerates simulator/data/default_profile.json: the stage profile `chaincomp simulate` uses by
# default, measured on the offline digits setup (teacher resnet20 -> student resnet8, 16x16) with
# the trainer's default hyperparameters, each method alone over its grid, two seeds.
# Run from the repository root after the README's set-up command (about 5 minutes on 2 CPU cores).
set -euo pipefail
.venv/bin/chaincomp profile --method DPQE --seeds 0,1 --out simulator/data/default_profile.json "$@"
