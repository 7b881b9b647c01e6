#!/usr/bin/env bash
# The Conformer against the Transformer on the demo corpus, for the same training time:
# bash bench/demo_conformer.sh [WORKDIR]. Builds the corpus (skipped when WORKDIR/corpus
# exists), trains configs/demo.py and configs/demo.py:conformer, exports both, evaluates each on
# the test split (beam 5, attention and joint CTC/attention 0.3), and plots dev loss and WER
# against training time (bench/compare_runs.py). About 40 minutes on a quiet 2-core CPU.
# README: "The Conformer on the demo corpus".
set -uo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export JAX_PLATFORMS=cpu
W=${1:-demo_workdir/conformer_vs_transformer}
START=$(date +%s)
stamp() { echo "== [$(( $(date +%s) - START )) s] $*"; }
if [ ! -f "$W/corpus/train.tsv" ]; then
  stamp corpus
  python -m s2t_jax.data.demo_corpus --out $W/corpus --num_train 12000 --num_dev 200 --num_test 200 --seed 0
fi
for name in transformer conformer; do
  cfg=configs/demo.py; [ $name = conformer ] && cfg=configs/demo.py:conformer
  stamp "train $name"
  python train.py --config $cfg --workdir $W/$name --config.data.root=$W/corpus --alsologtostderr 2>&1 | grep --line-buffered -E "\[(valid)\]|Error|error" || true
  python convert_checkpoint.py --src $W/$name --dst $W/${name}_model
  for dec in attention joint03; do
    extra=(); [ $dec = joint03 ] && extra=(--ctc_weight 0.3)
    python eval.py --checkpoint $W/${name}_model --manifest $W/corpus/test.tsv --num_beams 5 --output_dir $W/eval_${name}_$dec --overwrite "${extra[@]}" 2>/dev/null | tail -1 | sed "s/^/$name $dec /"
  done
done
python bench/compare_runs.py --out $W/conformer_vs_transformer.png transformer=$W/transformer conformer=$W/conformer
stamp done
