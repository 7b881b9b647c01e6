#!/usr/bin/env bash
# The demo, from nothing: install, make a synthetic speech corpus, train a small ASR model,
# evaluate it on the held-out test split (WER), and transcribe a demo file and a real recording.
#   bash scripts/demo.sh [WORKDIR]        (default: demo_workdir)
set -euo pipefail
cd "$(dirname "$0")/.."
WORKDIR=${1:-demo_workdir}
START=$(date +%s)
stamp() { echo "== [$(( $(date +%s) - START )) s] $*"; }

stamp "install"
[ -x .venv/bin/python ] || python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -r requirements.txt -e .
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}

stamp "corpus (eSpeak NG, 12000 train / 200 dev / 200 test utterances)"
python -m s2t_jax.data.demo_corpus --out "$WORKDIR/corpus" \
  --num_train 12000 --num_dev 200 --num_test 200 --seed 0

stamp "train (configs/demo.py)"
python train.py --config configs/demo.py --workdir "$WORKDIR/train" \
  --config.data.root="$WORKDIR/corpus" --alsologtostderr 2>&1 \
  | grep --line-buffered -E "\[(train|valid|compile)\]|Error|error" || true
python -m s2t_jax.plot_metrics "$WORKDIR/train"

stamp "export the trained model"
python convert_checkpoint.py --src "$WORKDIR/train" --dst "$WORKDIR/model"

stamp "evaluate on the test split (beam 5)"
python eval.py --checkpoint "$WORKDIR/model" --manifest "$WORKDIR/corpus/test.tsv" \
  --num_beams 5 --output_dir "$WORKDIR/eval"

stamp "transcribe a demo utterance and a real LibriSpeech recording (out of domain)"
DEMO_FILE=$(awk -F'\t' 'NR==2 {print $2}' "$WORKDIR/corpus/test.tsv")
echo "reference: $(awk -F'\t' 'NR==2 {print $4}' "$WORKDIR/corpus/test.tsv")"
python -m s2t_jax.transcribe --model "$WORKDIR/model" \
  "$WORKDIR/corpus/$DEMO_FILE" tests/assets/1272-128104-0000.flac
echo "reference: mister quilter is the apostle of the middle classes and we are glad to welcome his gospel"

stamp "done: curves in $WORKDIR/train/training_curves.png, results in $WORKDIR/eval/results.json"
