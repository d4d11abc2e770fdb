# Second call: the baseline pair and fixed shapes again (variance of the 3.0x), then torch.profiler of the default.
ONLY="fixed" LIMIT=300 bash bench/cuda_graphs/g1.sh; first=$?
mkdir -p $OUT/g1b && mv $OUT/g1.tgz $OUT/summary.txt $OUT/card.txt $OUT/g1b/ 2>/dev/null
TAGS="base" PTIME=150 bash bench/cuda_graphs/g2.sh || exit 1
exit $first
