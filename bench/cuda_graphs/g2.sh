# Issue 26, CUDA graphs, second call (only if g1 shows a graph variant that runs): torch.profiler over 3 steady
# steps of distill's default and of the variant VARIANT (its UPPER=value variables and key=value overrides, as in
# g1.sh), same data and model as the bench's, same call: wall per step, GPU kernel time, GPU busy share.
# E.g. VARIANT="UNSLOTH_BLOCK_CUDAGRAPHS=1 UNSLOTH_BLOCK_CUDAGRAPHS_MAX_SHAPES=16 DISTILL_RERECORD_LIMIT=4096 DISTILL_FIXED_SHAPES=1"
# Carry .gpu .tok.
mkdir -p /tmp/site && tar xzf .gpu/site.tgz -C /tmp/site || exit 1
export PYTHONPATH=$PWD/bench/cuda_graphs:/tmp/site:$PWD DISTILL_HOME=$PWD/.tok PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export DISTILL_HOOK_DIR=/tmp/graphs2; H=$DISTILL_HOOK_DIR; W=/tmp/gw; rm -rf $H; mkdir -p $H
VARIANT=${VARIANT:-"UNSLOTH_BLOCK_CUDAGRAPHS=1 UNSLOTH_BLOCK_CUDAGRAPHS_MAX_SHAPES=16 DISTILL_RERECORD_LIMIT=4096 DISTILL_FIXED_SHAPES=1"}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $H/card.txt; echo "start $(date -u +%FT%TZ)" | tee -a $H/card.txt
timeout 60 python3 - <<'PY' || exit 1
import sys; sys.path.insert(0, "bench"); from pathlib import Path
import train_throughput as tt
from common.models import resolve_model
tt.make_data(Path("/tmp/gw/data-long"), 800, trace=tt.LENGTHS["long"])
tt.make_model(Path("/tmp/gw/llama-1b"), resolve_model("embedded"), "1b")
PY
COMMON="batch_size=16 lora_r=16 lora_alpha=16 backend=auto"
env_of() { for x in $1; do [[ ${x%%=*} =~ ^[A-Z_0-9]+$ ]] && echo -n "$x "; done; }
cfg_of() { for x in $1; do [[ ${x%%=*} =~ ^[A-Z_0-9]+$ ]] || echo -n "$x "; done; }
FAILED=""
for tag in ${TAGS:-base variant}; do
  V=""; [ $tag = variant ] && V="$VARIANT"
  echo "== $tag $(date -u +%T) [$V]"
  timeout ${PTIME:-150} env $(env_of "$V") DISTILL_GRAPH_STATS=1 DISTILL_TAG=prof-$tag python3 bench/train_profile.py --data $W/data-long --model $W/llama-1b \
    --report $H/profile-$tag.txt --out /tmp/gp-$tag --start 12 --steps 3 $COMMON $(cfg_of "$V") > $H/prof-$tag.log 2>&1
  rc=$?; [ $rc -ne 0 ] && FAILED="$FAILED $tag"; echo "rc $rc after ${SECONDS}s"; head -2 $H/profile-$tag.txt 2>/dev/null || tail -5 $H/prof-$tag.log
done
echo "end $(date -u +%FT%TZ)" | tee -a $H/card.txt
cp $H/card.txt $OUT/; tar czf $OUT/g2.tgz -C $H .; ls -la $OUT
[ -z "$FAILED" ] || { echo "failed:$FAILED" >&2; exit 1; }  # the outputs above are kept either way
