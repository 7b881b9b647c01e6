"""Training configs: `python train.py --config configs/<file>.py:<variant>[,runlocal]`."""
