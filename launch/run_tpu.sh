#!/usr/bin/env bash
# Runs one facejax launch command on every worker of a Cloud TPU VM slice.
#
#   launch/run_tpu.sh TPU_NAME ZONE [PROJECT] -- python -m launch.train \
#       --config=configs/age_regressor.py --workdir=gs://bucket/run --distributed
#
# Each worker gets the repository (rsync of this checkout), installs
# requirements.txt plus the TPU wheel of JAX (`jax[tpu]`, kept out of
# requirements.txt), then runs the command. `--distributed` makes
# launch.train call jax.distributed.initialize(), which on TPU VMs finds the
# coordinator, process count and process id by itself. The workdir must be
# visible to every worker (a GCS bucket or a shared file system): orbax
# writes one checkpoint collectively from all processes.
set -euo pipefail

if [[ $# -lt 4 ]]; then
  echo "usage: $0 TPU_NAME ZONE [PROJECT] -- COMMAND..." >&2
  exit 2
fi
TPU_NAME=$1; ZONE=$2; shift 2
PROJECT_FLAG=()
if [[ $1 != "--" ]]; then PROJECT_FLAG=(--project="$1"); shift; fi
[[ $1 == "--" ]] || { echo "expected -- before the command" >&2; exit 2; }
shift
COMMAND=$(printf '%q ' "$@")
REPO_DIR=facejax

cd "$(dirname "$0")/.."
gcloud compute tpus tpu-vm scp --recurse --worker=all --zone="$ZONE" \
  "${PROJECT_FLAG[@]}" --scp-flag=-q . "$TPU_NAME:~/$REPO_DIR"
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --worker=all --zone="$ZONE" \
  "${PROJECT_FLAG[@]}" --command="
    set -e; cd ~/$REPO_DIR
    python3 -m venv .venv && . .venv/bin/activate
    pip install -q -r requirements.txt 'jax[tpu]'
    $COMMAND"
