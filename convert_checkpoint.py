"""Converts Speech2Text checkpoints between transformers, fairseq and s2t-jax formats.

python convert_checkpoint.py --src facebook-s2t-dir --dst ours/            # -> s2t-jax
python convert_checkpoint.py --src checkpoint_best.pt --dst ours/          # fairseq -> s2t-jax
python convert_checkpoint.py --src ours/ --dst hf/ --to transformers       # -> transformers
python convert_checkpoint.py --src train_workdir/ --dst model/             # training run -> model
"""

import argparse

from s2t_jax.checkpoints.convert import convert_checkpoint


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--src", required=True, help="transformers dir, s2t-jax dir or fairseq .pt")
    parser.add_argument("--dst", required=True, help="output directory")
    parser.add_argument("--to", default="s2t_jax", choices=["s2t_jax", "transformers"])
    args = parser.parse_args(argv)
    convert_checkpoint(args.src, args.dst, args.to)
    print(f"wrote {args.to} checkpoint to {args.dst}")


if __name__ == "__main__":
    main()
