#!/usr/bin/env bash
# What joint CTC/attention decoding, LM fusion, the CTC decoders and pause segmentation buy on
# the demo corpus: bash bench/demo_decoders.sh [WORKDIR]. Builds the corpus (with its long-form
# set), trains configs/demo.py and a small LM, then runs eval.py with each decoder and eval.py
# --long_form with each segmenter. About 45 minutes on a quiet 2-core CPU. README: "Decoders".
set -uo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export JAX_PLATFORMS=cpu
W=${1:-demo_workdir/decoders}
START=$(date +%s)
stamp() { echo "== [$(( $(date +%s) - START )) s] $*"; }
stamp corpus
python -m s2t_jax.data.demo_corpus --out $W/corpus --num_train 12000 --num_dev 200 --num_test 200 --seed 0 --long_form
stamp train
python train.py --config configs/demo.py --workdir $W/train --config.data.root=$W/corpus --alsologtostderr 2>&1 | grep --line-buffered -E "\[(valid)\]|Error|error" || true
python convert_checkpoint.py --src $W/train --dst $W/model
stamp lm-text
W=$W python - <<'PY'
import csv
import os

from s2t_jax.data.prep.sentences import make_sentences
held = set()
for split in ("dev", "test"):
    with open(f"{os.environ['W']}/corpus/{split}.tsv") as f:
        held |= {r["tgt_text"] for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)}
pool = [s for s in make_sentences(60000, seed=12345) if s not in held]
open(f"{os.environ['W']}/corpus/lm_train.txt", "w").write("\n".join(pool[:55000]) + "\n")
open(f"{os.environ['W']}/corpus/lm_valid.txt", "w").write("\n".join(pool[55000:]) + "\n")
print(len(pool), "LM sentences; held-out dev/test sentences excluded:", len(held))
PY
stamp lm-train
python train.py --config configs/lm.py:small --workdir $W/lm --config.data.root=$W/corpus --config.data.train_text=lm_train.txt --config.data.valid_text=lm_valid.txt --config.max_update=1500 --config.warmup_updates=200 --config.lr=2e-3 --config.log_interval=500 --config.save_interval_updates=1500 --alsologtostderr 2>&1 | grep -E "\[(train|valid)\]" || true
stamp evals
ev() { name=$1; shift; s=$(date +%s.%N); python eval.py --checkpoint $W/model --manifest $W/corpus/test.tsv --num_beams 5 --output_dir $W/eval_$name --overwrite "$@" >/dev/null 2>&1; e=$(date +%s.%N); python -c "import json;r=json.load(open('$W/eval_$name/results.json'));print('$name', round(r['metrics']['wer'],2), 'wall', round($e-$s,1), 'decode_s', round(r['timing']['decode_time_s'],1))"; }
ev attention
ev joint03 --ctc_weight 0.3
ev joint05 --ctc_weight 0.5
ev ctc_greedy --decoder ctc_greedy
ev rescoring --decoder rescoring --ctc_weight 0.5
ev attention_lm --lm $W/lm/lm --lm_weight 0.3
ev joint03_lm --ctc_weight 0.3 --lm $W/lm/lm --lm_weight 0.3
stamp long-form
lf() { name=$1; shift; python eval.py --long_form --checkpoint $W/model --manifest $W/corpus/longform.tsv --num_beams 5 --output_dir $W/lf_$name "$@" 2>/dev/null | tail -1 | sed "s/^/$name /"; }
lf pause --segmenter pause --window_seconds 20
lf pause_joint --segmenter pause --window_seconds 20 --ctc_weight 0.3
lf fixed_joint --segmenter fixed --window_seconds 20 --ctc_weight 0.3
stamp done
