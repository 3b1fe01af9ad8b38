#!/usr/bin/env bash
# Regenerates simulator/data/default_profile.json, the stage profile `chaincomp simulate` uses by
# default, on the offline digits setup (teacher resnet20 -> student resnet8, 16x16) with the
# trainer's default hyperparameters:
#   1. each method alone over its grid, two seeds (chaincomp profile);
#   2. both orders of every pair of methods, trained for real (chaincomp train, 27 runs a seed): the later
#      method j of a pair at every value of its profiled grid (P 0.25/0.5/0.75, Q 1/2/4/8 bits; one E
#      run reports every threshold), the earlier one at the trainer's default, so that each
#      interaction term is measured as a curve over j's hyperparameter;
#   3. each method alone at the grid points no pair run starts with (5 single-stage runs a seed), so
#      that every single-stage delta is pinned on the runs' own base models;
#   4. DPQ and DQP over P 0.25/0.5/0.75 x Q 1/2/8 bits (18 runs a seed): how P and Q interact on the
#      student, as a function of both hyperparameters (the three-method terms D->P->Q and D->Q->P);
#   steps 2 to 4 run for seeds 0 and 1 (each seed its own split, base model and training noise);
#   5. the order-interaction terms (pairs, and the three-method terms DPQ and DQP) fitted from those
#      runs, the deltas and the base accuracy refined to the runs' (chaincomp fit --refine-deltas).
# Intermediate files go to build/default-profile/ (kept, so an interrupted run resumes).
# Run from the repository root after the README's set-up command; about 65 minutes on 2 CPU cores.
set -euo pipefail
work=build/default-profile
mkdir -p "$work/runs"
[ -f "$work/single_stage.json" ] || .venv/bin/chaincomp profile --method DPQE --seeds 0,1 --out "$work/single_stage.json"
train() {  # NAME ARGS...: one run, skipped when its record exists
  local name=$1
  shift
  [ -f "$work/runs/$name.json" ] || .venv/bin/chaincomp train --out "$work/runs/$name.json" "$@"
}
for seed in 0 1; do
  s=$([ "$seed" = 0 ] && echo "" || echo "-s$seed")  # seed 0's records keep their plain names
  for first in P Q E; do train "${first}D$s" --order "${first}D" --seed "$seed"; done
  for first in D P Q; do train "${first}E$s" --order "${first}E" --seed "$seed"; done
  for ratio in 0.25 0.5 0.75; do
    for first in D Q E; do train "${first}P-p$ratio$s" --order "${first}P" --prune-ratio "$ratio" --seed "$seed"; done
  done
  for bits in 1 2 4 8; do
    for first in D P E; do train "${first}Q-q$bits$s" --order "${first}Q" --w-bits "$bits" --seed "$seed"; done
  done
  for ratio in 0.25 0.75; do train "P-p$ratio$s" --order P --prune-ratio "$ratio" --seed "$seed"; done
  for ratio in 0.25 0.5 0.75; do  # P and Q on the student, both orders, over a grid of both
    for bits in 1 2 8; do
      train "DPQ-p$ratio-q$bits$s" --order DPQ --prune-ratio "$ratio" --w-bits "$bits" --seed "$seed"
      train "DQP-q$bits-p$ratio$s" --order DQP --prune-ratio "$ratio" --w-bits "$bits" --seed "$seed"
    done
  done
  for bits in 2 4 8; do train "Q-q$bits$s" --order Q --w-bits "$bits" --seed "$seed"; done
done
.venv/bin/chaincomp fit "$work"/runs/*.json --profile "$work/single_stage.json" --refine-deltas --triples DPQ,DQP \
  -o simulator/data/default_profile.json
