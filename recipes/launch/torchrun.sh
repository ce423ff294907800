#!/bin/bash
# SegGPT ViT-L pretraining on 8 nodes x 8 GPUs with torchrun (no SLURM).
#
# Run the same command on every node, from the repository root:
#   MASTER_ADDR=node0.example MASTER_PORT=29500 recipes/launch/torchrun.sh
#   MASTER_ADDR=node0.example recipes/launch/torchrun.sh --config recipes/pretrain_vit_l_fsdp.yaml
# Environment (defaults in brackets): MASTER_ADDR (required): the rendezvous host, any one of the nodes;
# MASTER_PORT [29500]; NNODES [8]; NPROC_PER_NODE [8]; RDZV_ID [seggpt-pretrain]: the same on every node
# of one job, a new one per job. Arguments after the script name go to `seggpt-lab fit` after the recipe.
#
# torchrun's c10d rendezvous assigns node ranks, starts NPROC_PER_NODE processes per node and exports
# RANK, LOCAL_RANK, WORLD_SIZE, GROUP_RANK, MASTER_ADDR and MASTER_PORT. Lightning detects this
# (TorchElasticEnvironment), so it starts no processes of its own and only joins the process group; it
# raises unless trainer.devices x trainer.num_nodes equals torchrun's WORLD_SIZE, hence both are passed.
# Failed workers are not restarted (--max-restarts 0): resume with --ckpt_path .../last.ckpt instead.

set -euo pipefail

: "${MASTER_ADDR:?set MASTER_ADDR to the rendezvous host (one of the nodes)}"
MASTER_PORT="${MASTER_PORT:-29500}"
NNODES="${NNODES:-8}"
NPROC_PER_NODE="${NPROC_PER_NODE:-8}"
RDZV_ID="${RDZV_ID:-seggpt-pretrain}"

cd "$(dirname "$0")/../.."
if [[ -f .venv/bin/activate ]]; then
    source .venv/bin/activate
fi

torchrun \
    --nnodes "${NNODES}" \
    --nproc-per-node "${NPROC_PER_NODE}" \
    --rdzv-backend c10d \
    --rdzv-endpoint "${MASTER_ADDR}:${MASTER_PORT}" \
    --rdzv-id "${RDZV_ID}" \
    --max-restarts 0 \
    --no-python \
    seggpt-lab fit --config recipes/pretrain_vit_l.yaml \
    --trainer.num_nodes "${NNODES}" --trainer.devices "${NPROC_PER_NODE}" "$@"
