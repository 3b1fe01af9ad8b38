#!/usr/bin/env bash
# Regenerates simulator/data/default_profile.json, the stage profile `chaincomp simulate` uses by
# default, on the offline digits setup (teacher resnet20 -> student resnet8, 16x16) with the
# trainer's default hyperparameters:
#   1. each method alone over its grid, two seeds (chaincomp profile);
#   2. both orders of every pair of methods, trained for real (chaincomp train, 12 runs);
#   3. the order-interaction terms fitted from those runs (chaincomp fit).
# Intermediate files go to build/default-profile/ (kept, so an interrupted run resumes).
# Run from the repository root after the README's set-up command; about 20 minutes on 2 CPU cores.
set -euo pipefail
work=build/default-profile
mkdir -p "$work/runs"
[ -f "$work/single_stage.json" ] || .venv/bin/chaincomp profile --method DPQE --seeds 0,1 --out "$work/single_stage.json"
for order in DP PD DQ QD DE ED PQ QP PE EP QE EQ; do
  [ -f "$work/runs/$order.json" ] || .venv/bin/chaincomp train --order "$order" --out "$work/runs/$order.json"
done
.venv/bin/chaincomp fit "$work"/runs/*.json --profile "$work/single_stage.json" -o simulator/data/default_profile.json
