"""Label-efficiency benchmark on the project's generated data: `al-loop simulate` from the project's pretrained
detector, on two datasets of different domains.

  --dataset digits    al.data.demo: real handwritten digits (5 classes, imbalanced, 1-6 a scene) pasted on real
                      photos; the test split uses held-out handwriting
  --dataset symbols   al.data.synthetic symbols: card suits and chess pieces (8 classes, rare ones, 3-15 a scene)
                      rendered from DejaVu Sans on other photos; the test split uses a held-out glyph style

Both start from benchmarks/weights/yolov8n_shapes.pt (yolov8n pretrained on the synthetic shapes domain: other
classes, other scenes; benchmarks/pretrain.py), as users fine-tune a pretrained detector. The train split is made
large enough that every seed draws its seed set and pool from its own block (independent samples). The simulator
(al/sim, docs/SIMULATE.md) does the rest; this script makes the data and copies the results to --out:

  label_efficiency_<dataset>.csv / _summary.json / .md / .png   (the simulator's simulation.* files)

    .venv/bin/python benchmarks/label_efficiency.py --dataset digits        # the default size (docs/SIMULATE.md)
    .venv/bin/python benchmarks/label_efficiency.py --dataset digits --seeds 0 --arms random,entropy  # a look
Any other option is passed to `al-loop simulate` as it is (e.g. --jobs 1). Running the same command again continues
the work folder (--work); on a fresh machine it continues from the committed label_efficiency_<dataset>_state.json
(every finished unit's rows), so a benchmark longer than a session runs in parts.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RESULTS = Path(__file__).resolve().parent / "results"
PRETRAINED = Path(__file__).resolve().parent / "weights" / "yolov8n_shapes.pt"
ARMS = "random,entropy,combined,most_boxes,diversity"


def parse_args(argv=None) -> tuple[argparse.Namespace, list[str]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=("digits", "symbols"), default="digits")
    ap.add_argument("--seeds", default="0-3", help="tuning seeds (default 0-3: the default size)")
    ap.add_argument("--confirm-seeds", default="", help="fresh confirmation seeds, e.g. 8-15")
    ap.add_argument("--arms", default=ARMS)
    ap.add_argument("--seed-set", type=int, default=16, help="initially labelled images per seed")
    ap.add_argument("--budgets", default="16,32,64,128", help="images bought per round: the labelled set doubles "
                    "from 16 to 256 of the 316 a seed draws")
    ap.add_argument("--pool", type=int, default=300, help="unlabelled pool images per seed")
    ap.add_argument("--blocks", type=int, default=16, help="disjoint seed blocks the generated train split holds")
    ap.add_argument("--val", type=int, default=96, help="validation images (early stopping, best epoch)")
    ap.add_argument("--test", type=int, default=300, help="test images (the reported mAP)")
    ap.add_argument("--size", type=int, default=128, help="generated image side in pixels")
    ap.add_argument("--data-seed", type=int, default=0, help="seed of the generated dataset")
    ap.add_argument("--model", default=str(PRETRAINED), help="the start (default: the project's pretrained .pt)")
    ap.add_argument("--max-epochs", type=int, default=40, help="a point's epoch cap (benchmarks/results/"
                    "converged_probe: the compute check doubles it)")
    ap.add_argument("--patience", type=int, default=10, help="epochs without a better validation fitness")
    ap.add_argument("--lr", type=float, default=0.001, help="AdamW lr0 (0.002 made some fine-tunes collapse to mAP "
                    "0 for several epochs: benchmarks/results/converged_probe)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    ap.add_argument("--work", type=Path, default=None,
                    help="work folder (default /tmp/al_label_efficiency_<dataset>; kept: the same command continues)")
    return ap.parse_known_args(argv)


def make_data(args: argparse.Namespace, work: Path) -> Path:
    """The benchmark's dataset: a train split of --blocks seed blocks, and the val and test splits."""
    n_train = args.blocks * (args.seed_set + args.pool)
    if args.dataset == "digits":
        from al.data.demo import generate_demo

        return generate_demo(work / "data", seed=args.data_seed, n_train=n_train, n_val=args.val, n_test=args.test,
                             n_pool=0, size=args.size)
    from al.data.synthetic import generate_symbols

    return generate_symbols(work / "data", seed=args.data_seed, n_train=n_train, n_val=args.val, n_test=args.test,
                            size=args.size)


def main(argv=None) -> int:
    args, rest = parse_args(argv)
    from al.cli import simulate_main

    work = args.work or Path(f"/tmp/al_label_efficiency_{args.dataset}")
    data = make_data(args, work)
    state = work / "simulation" / "simulation_state.json"
    kept = args.out / f"label_efficiency_{args.dataset}_state.json"
    if not state.is_file() and kept.is_file():
        # a fresh machine continues from the committed units (the data are generated again, the same bit for bit)
        state.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(kept, state)
        print(f"continuing from {kept}")
    extra = ["--confirm-seeds", args.confirm_seeds] if args.confirm_seeds else []
    code = simulate_main(["--data", str(data), "--out", str(work / "simulation"), "--seed-set", str(args.seed_set),
                          "--pool", str(args.pool), "--budgets", args.budgets, "--seeds", args.seeds, "--arms",
                          args.arms, "--model", args.model, "--protocol", "converged", "--max-epochs",
                          str(args.max_epochs), "--patience", str(args.patience), "--lr", str(args.lr), *extra, *rest])
    if (work / "simulation" / "simulation.md").is_file():  # also what a stopped run finished
        args.out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(state, kept)
        for suffix in (".csv", "_summary.json", ".md", ".png"):
            shutil.copyfile(work / "simulation" / f"simulation{suffix}",
                            args.out / f"label_efficiency_{args.dataset}{suffix}")
        print(f"copied to {args.out}/label_efficiency_{args.dataset}.*")
    return code


if __name__ == "__main__":
    sys.exit(main())
