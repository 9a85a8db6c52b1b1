#!/usr/bin/env bash
# Issue 23's GPU run (see bench/gpu/run.ts): `moi-gen doctor --backend webgpu`, then the decode
# figures of the GPU plan as one JSON object on stdout (progress on stderr). From anywhere in the
# checkout; on a bare GPU machine it runs through shared/gpu/pack.sh's bundle (.gpu-pack/), which
# brings node and sets up the NVIDIA Vulkan driver.
#   bash bench/gpu/run.sh [--no-doctor] [--tiny] [--out FILE] [--tokens N] [--only smollm2-135m,qwen3-1.7b,qwen2.5-7b]
set -euo pipefail
cd "$(dirname "$0")/../.."
run=()
if ! command -v node >/dev/null 2>&1; then
  [ -f .gpu-pack/on-gpu.sh ] || { echo "run.sh: no node and no .gpu-pack/ (run shared/gpu/pack.sh on a machine with node first)" >&2; exit 2; }
  run=(bash .gpu-pack/on-gpu.sh)
fi
doctor=1
args=()
for a in "$@"; do
  if [ "$a" = "--no-doctor" ]; then doctor=0; else args+=("$a"); fi
done
if [ $doctor = 1 ]; then
  ${run[@]+"${run[@]}"} node --import tsx packages/cli/src/bin.ts doctor --backend webgpu >&2 || echo "run.sh: doctor failed (going on with the run)" >&2
fi
exec ${run[@]+"${run[@]}"} node --import tsx bench/gpu/run.ts ${args[@]+"${args[@]}"}
