"""Label-efficiency benchmark on the project's generated data: `al-loop simulate` on an al.data.demo dataset.

The demo generator (digits on photos, imbalanced classes; the test split uses held-out handwriting) writes one
dataset whose train split holds the seed set and the pool; the simulator (al.app.simulate, docs/SIMULATE.md) draws
both from it per seed, hides the pool labels and runs every arm and protocol through the product's own loop. This
script only makes the data and copies the simulator's results to --out:

  label_efficiency.csv / _summary.json / .md / .png   (the simulator's simulation.* files)

    .venv/bin/python benchmarks/label_efficiency.py --protocol matched    # the default size (docs/SIMULATE.md)
    .venv/bin/python benchmarks/label_efficiency.py --seeds 0 --rounds 1 --arms random,entropy   # a quick look
Any other option is passed to `al-loop simulate` as it is (e.g. --budget-unit boxes --budget 96).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv=None) -> tuple[argparse.Namespace, list[str]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed-set", type=int, default=32, help="initially labelled images per seed")
    ap.add_argument("--pool", type=int, default=300, help="unlabelled pool images per seed")
    ap.add_argument("--val", type=int, default=48, help="validation images (model selection during training)")
    ap.add_argument("--test", type=int, default=200, help="test images (the reported mAP)")
    ap.add_argument("--size", type=int, default=128, help="generated image side in pixels")
    ap.add_argument("--data-seed", type=int, default=0, help="seed of the generated dataset")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    ap.add_argument("--work", type=Path, default=Path("/tmp/al_label_efficiency"),
                    help="work folder of the simulation (kept: running the same command again continues it)")
    return ap.parse_known_args(argv)


def main(argv=None) -> int:
    args, rest = parse_args(argv)
    from al.cli import simulate_main
    from al.data.demo import generate_demo

    # train = what the simulator draws seed set and pool from; a margin of 10 % so the draw differs per seed
    n_train = int((args.seed_set + args.pool) * 1.1)
    data = generate_demo(args.work / "data", seed=args.data_seed, n_train=n_train, n_val=args.val, n_test=args.test,
                         n_pool=0, size=args.size)
    code = simulate_main(["--data", str(data), "--out", str(args.work / "simulation"), "--seed-set",
                          str(args.seed_set), "--pool", str(args.pool), *rest])
    if code == 0:
        args.out.mkdir(parents=True, exist_ok=True)
        for suffix in (".csv", "_summary.json", ".md", ".png"):
            shutil.copyfile(args.work / "simulation" / f"simulation{suffix}", args.out / f"label_efficiency{suffix}")
        print(f"copied to {args.out}/label_efficiency.*")
    return code


if __name__ == "__main__":
    sys.exit(main())
