"""``python -m toyworld OUT_DIR``: write the toy data folder and the toy model (offline)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from toyworld import (
    DEFAULT_CODE_SWITCH_RATE, DEFAULT_PARALLEL_SIZE, DEFAULT_PRETRAIN_STEPS, DEFAULT_TEST_SIZE, DEFAULT_TLM_SHARE, DEFAULT_TRAIN_SIZE, DEFAULT_VOCAB_SIZE,
    write_toy,
)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m toyworld",
                                     description="Write the toy data folder and toy model (offline).")
    parser.add_argument("out_dir", type=Path, help="writes OUT_DIR/data and OUT_DIR/model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=DEFAULT_TRAIN_SIZE)
    parser.add_argument("--n-test", type=int, default=DEFAULT_TEST_SIZE)
    parser.add_argument("--n-parallel", type=int, default=DEFAULT_PARALLEL_SIZE)
    parser.add_argument("--pretrain-steps", type=int, default=DEFAULT_PRETRAIN_STEPS)
    parser.add_argument("--tlm-share", type=float, default=DEFAULT_TLM_SHARE)
    parser.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE)
    parser.add_argument("--code-switch-rate", type=float, default=DEFAULT_CODE_SWITCH_RATE)
    args = parser.parse_args(argv)
    data_dir, model_dir = write_toy(args.out_dir, args.seed, args.pretrain_steps, args.tlm_share, args.vocab_size,
                                    args.code_switch_rate,
                                    n_train=args.n_train, n_test=args.n_test, n_parallel=args.n_parallel)
    print(data_dir)
    print(model_dir)


if __name__ == "__main__":
    main()
