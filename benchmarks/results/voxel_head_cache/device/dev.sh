set -u
python -m pip install -q --no-deps --target /tmp/pk .whl/*.whl >/dev/null 2>&1
export PYTHONPATH=src:/tmp/pk PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2 MKL_NUM_THREADS=2
nproc; free -g | head -2
cp -r src /tmp/srcB
sed -i 's/^VALIDATION_SLABS = 4$/VALIDATION_SLABS = 1/' /tmp/srcB/napari_topo/training/finetune.py
grep -n "^VALIDATION_SLABS" /tmp/srcB/napari_topo/training/finetune.py
B="python benchmarks/bench_finetune.py --skip-tubes --case .devdata/3Dircadb1.1 --base unet-dice --minutes 10 --layers head --device cpu --threads 2"
for S in 0 1 2; do
  mkdir -p $OUT/A$S $OUT/B$S
  ( $B --seed $S --results $OUT/A$S > $OUT/A$S/log.txt 2>&1 ) &
  ( PYTHONPATH=/tmp/srcB:/tmp/pk $B --seed $S --results $OUT/B$S > $OUT/B$S/log.txt 2>&1 ) &
done
mkdir -p $OUT/tubes $OUT/stacks
( python benchmarks/bench_finetune.py --base unet-dice --layers head --tube-minutes 2 --device cpu --threads 2 --results $OUT/tubes > $OUT/tubes/log.txt 2>&1 ) &
( python benchmarks/bench_finetune.py --skip-tubes --stack .devdata/vesselnn/poon2015_BBB_noLeakage --stack .devdata/vesselnn/poon2015_BBB_Leakage --stack .devdata/vesselnn/poon2015_plaqueVessels --stack-minutes 5 --layers head --base unet-dice --device cpu --threads 2 --results $OUT/stacks > $OUT/stacks/log.txt 2>&1 ) &
wait
for d in $OUT/*/; do echo "== $d"; grep -E "lower half|fine-tuned|base |Fine-tune:|Maximum resident|Elapsed" $d/log.txt | head -12; done
