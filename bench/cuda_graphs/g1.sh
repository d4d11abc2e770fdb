# Issue 26, CUDA graphs (helper session): one device call, 1.17B LoRA r16 batch 16, long records, 24 steps (10 warm-up).
# Baseline pair (plain TRL, distill default) + CUDA-graph variants, each run its own bench invocation (per-run
# timeout, own logs), in priority order; a run starts only while it can end inside LIMIT seconds.
# Carry .gpu .tok. Hook: bench/cuda_graphs/sitecustomize.py (acts only on DISTILL_* variables; see its docstring).
mkdir -p /tmp/site && tar xzf .gpu/site.tgz -C /tmp/site || exit 1
export PYTHONPATH=$PWD/bench/cuda_graphs:/tmp/site:$PWD DISTILL_HOME=$PWD/.tok PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export DISTILL_HOOK_DIR=/tmp/graphs
LIMIT=${LIMIT:-565}; STEPS=${STEPS:-24}; WARM=${WARM:-10}; TSCALE=${TSCALE:-100}; W=/tmp/gw; H=$DISTILL_HOOK_DIR  # TSCALE: timeouts, %
rm -rf $H; mkdir -p $H
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $H/card.txt
grep -m1 "model name" /proc/cpuinfo | tee -a $H/card.txt; echo "start $(date -u +%FT%TZ)" | tee -a $H/card.txt
G="UNSLOTH_BLOCK_CUDAGRAPHS=1 UNSLOTH_BLOCK_CUDAGRAPHS_MAX_SHAPES=16 DISTILL_RERECORD_LIMIT=4096"
S="DISTILL_GRAPH_STATS=1"
# tag | timeout | bench --backend | --run spec
RUNS=(
 "trl|100|auto|trl lora"
 "base|120|auto|distill lora $S DISTILL_TAG=base"
 "graphs-fixed|180|auto|distill lora $G DISTILL_FIXED_SHAPES=1 $S DISTILL_TAG=graphs-fixed TORCH_LOGS=cudagraphs"
 "fixed|120|auto|distill lora DISTILL_FIXED_SHAPES=1 $S DISTILL_TAG=fixed"
 "graphs-var|130|auto|distill lora UNSLOTH_BLOCK_CUDAGRAPHS=1 $S DISTILL_TAG=graphs-var TORCH_LOGS=cudagraphs"
 "nockpt-1024|100|auto|distill lora gradient_checkpointing=false lora_dtype=bfloat16 max_batch_tokens=1024 $S DISTILL_TAG=nockpt-1024"
 "hf-ro-fixed|170|hf|distill lora batching=padded max_batch_tokens=8192 DISTILL_FIXED_SHAPES=1 DISTILL_HF_COMPILE=reduce-overhead $S DISTILL_TAG=hf-ro-fixed TORCH_LOGS=cudagraphs"
)
FAILED=""
if [ -n "$ONLY" ]; then  # ONLY="tag tag ...": the baseline pair plus these
  KEEP=(); for r in "${RUNS[@]}"; do case " trl base $ONLY " in *" ${r%%|*} "*) KEEP+=("$r");; esac; done; RUNS=("${KEEP[@]}")
fi
for r in "${RUNS[@]}"; do
  IFS='|' read -r tag t backend spec <<< "$r"; t=$((t * TSCALE / 100))
  if [ $((SECONDS + t)) -gt $LIMIT ]; then echo "SKIP $tag (elapsed ${SECONDS}s + ${t}s > ${LIMIT}s)" | tee -a $H/skipped.txt; FAILED="$FAILED skipped:$tag"; continue; fi
  echo "== $tag $(date -u +%T) [$spec]"
  timeout $t python3 bench/train_throughput.py gpu --out $W --steps $STEPS --warmup $WARM --backend $backend --run "$spec" > $H/bench-$tag.log 2>&1
  rc=$?; [ $rc -ne 0 ] && FAILED="$FAILED $tag"; echo "rc $rc after ${SECONDS}s"; grep -E '^\{"tokens_per_s|failed' $H/bench-$tag.log | cut -c1-400
  cp $W/results-gpu.json $H/results-$tag.json 2>/dev/null
  if [ "$tag" != trl ]; then
    cp $W/distill-lora/metrics.jsonl $H/metrics-$tag.jsonl 2>/dev/null
    tail -c 300000 $W/distill-lora.log > $H/log-$tag.log 2>/dev/null
    grep -h -i -E "cudagraph|block compile|skipping|Unsloth: compiling|error" $H/log-$tag.log | sort | uniq -c | sort -rn | head -12
  fi
done
echo "end $(date -u +%FT%TZ)" | tee -a $H/card.txt
python3 bench/cuda_graphs/gsummary.py $H | tee $H/summary.txt
cp $H/summary.txt $H/card.txt $OUT/; tar czf $OUT/g1.tgz -C $H . ; ls -la $OUT
[ -z "$FAILED" ] || { echo "failed:$FAILED" >&2; exit 1; }  # the outputs above are kept either way
