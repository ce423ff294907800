#!/bin/bash
# SegGPT ViT-L pretraining on 8 nodes x 8 GPUs under SLURM.
#
#   sbatch recipes/launch/slurm.sh                                                  # DDP
#   sbatch recipes/launch/slurm.sh --config recipes/pretrain_vit_l_fsdp.yaml        # FSDP
#   sbatch recipes/launch/slurm.sh --trainer.max_steps=100                          # any CLI override
#
# Submit from the repository root (paths in the recipes are relative to it). Arguments after the script
# name go to `seggpt-lab fit` after the base recipe, so they override it.
#
# srun starts one task per GPU; Lightning's SLURMEnvironment reads the ranks from SLURM_PROCID,
# SLURM_LOCALID and SLURM_NODEID and the master node from SLURM_NODELIST, and checks that
# --nodes == trainer.num_nodes and --ntasks-per-node == trainer.devices (hence both are passed below).
# Lightning ignores SLURM when the job is named "bash" or "interactive": keep a job name.
# On SIGUSR1 (90 s before the time limit) Lightning saves outputs/pretrain_vit_l/hpc_ckpt_<n>.ckpt and
# requeues the job; the requeued job resumes from it without --ckpt_path.
#
#SBATCH --job-name=seggpt-pretrain-vit-l
#SBATCH --nodes=8
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=12
#SBATCH --mem=0
#SBATCH --time=24:00:00
#SBATCH --signal=SIGUSR1@90
#SBATCH --requeue
#SBATCH --output=seggpt-pretrain-%j.out
# --cpus-per-task: 8 DataLoader workers per GPU (data.num_workers) + the training process, with headroom.

set -euo pipefail

cd "${SLURM_SUBMIT_DIR:-.}"
if [[ -f .venv/bin/activate ]]; then
    source .venv/bin/activate
fi

NUM_NODES="${SLURM_JOB_NUM_NODES:-8}"
GPUS_PER_NODE="${SLURM_NTASKS_PER_NODE:-8}"

srun seggpt-lab fit --config recipes/pretrain_vit_l.yaml \
    --trainer.num_nodes "${NUM_NODES}" --trainer.devices "${GPUS_PER_NODE}" "$@"
