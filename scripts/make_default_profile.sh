#!/usr/bin/env bash
# Regenerates simulator/data/default_profile.json, the stage profile `chaincomp simulate` uses by
# default, on the offline digits setup (teacher resnet20 -> student resnet8, 16x16) with the
# trainer's default hyperparameters, as one campaign (seeds 0 and 1; each seed its own split, base
# model and training noise):
#   --single DPQE        each method alone over its grid (D resnet8; P 0.25/0.5/0.75; Q 1/2/4/8 bits;
#                        one E run reports every threshold): the single-stage curves;
#   --pairs DPQE         both orders of every pair, the later method j over its grid and the earlier
#                        at the trainer's default (27 runs a seed), so that each interaction term is
#                        measured as a curve over j's hyperparameter;
#   --triples DPQ,DQP    P and Q on the student, both orders, over P 0.25/0.5/0.75 x Q 1/2/8 bits (18
#                        runs a seed): the three-method terms D->P->Q and D->Q->P;
#   --triples EDP,...    E's heads through D with a P or Q (EDP, EDQ, EPD, EQD, PED, QED over P
#                        0.25/0.5/0.75 or Q 1/2/8 bits: 18 runs a seed): the three-stage exit terms
#                        (a distilled student's inherited heads under a later P or Q, a compressed
#                        teacher's heads distilled);
# then the stage profile from the single-method runs (chaincomp profile finds them complete and
# reuses them), and the order-interaction terms fitted from all the runs, the deltas and the base
# accuracy refined to the runs' (chaincomp fit --refine-deltas), twice:
#   simulator/data/default_profile.json     every identified term, least squares, spreads calibrated on
#                                           held-out runs: the one simulate uses by default (the held-out
#                                           benchmarks chose it, see the README);
#   simulator/data/profile_selected.json    the model chosen by cross-validation over the runs (--select:
#                                           ridge penalty, the term families kept, calibrated noise).
# Shared prefixes train once: 2 base models and 152 stage trainings instead of 144 and 342 (one run each).
# One torch thread per training, so --jobs 2 and a serial run record the same numbers.
# Intermediate files go to build/profile-campaign/ (kept: running this again continues).
# Run from the repository root after the README's set-up command; see the README for the time it takes.
set -euo pipefail
work=build/profile-campaign
cc=.venv/bin/chaincomp
jobs=${JOBS:-2}
mkdir -p "$work"
rm -f "$work/campaign.json"  # the plan is deterministic; the records it names are kept and reused
$cc campaign plan --out "$work/campaign.json" --single DPQE --pairs DPQE \
  --triples DPQ,DQP,EDP,EDQ,EPD,EQD,PED,QED --triple-grid Q=1,2,8 --seeds 0,1
$cc campaign run "$work/campaign.json" --jobs "$jobs" --threads-per-run 1
rm -f "$work/single_stage.json"
$cc profile --method DPQE --seeds 0,1 --runs-dir "$work" --threads-per-run 1 --out "$work/single_stage.json"
$cc fit "$work"/runs/*.json --profile "$work/single_stage.json" --refine-deltas --triples DPQ,DQP \
  --calibrate-spread -o simulator/data/default_profile.json
$cc fit "$work"/runs/*.json --profile "$work/single_stage.json" --refine-deltas --triples DPQ,DQP --select \
  -o simulator/data/profile_selected.json
