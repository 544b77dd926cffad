"""A seed's data: its seed set and pool drawn from the train split (disjoint blocks where train is large enough),
the pool's labels hidden from training, and the fully labelled set of the seed's upper bound."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import yaml

from al.core import store
from al.data import dataset
from al.sim.spec import DEFAULT_POOL, SimSpec, SimulationError

BLOCK_SHUFFLE = 0x5EED
"""The fixed shuffle of the train split that the disjoint blocks are cut from (the same for every seed)."""


def _read_list(path: Path, option: str) -> list[str]:
    if not path.is_file():
        raise SimulationError(f"--{option} {path}: file not found; give a text file with one image path a line")
    return dataset.list_images(str(path.resolve()), path.parent, path, option)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def blocks(train: list[str], size: int) -> list[list[str]]:
    """The train split cut into disjoint blocks of `size` images after a fixed shuffle; a seed draws from block
    seed mod len(blocks). Empty when train holds fewer than `size` images."""
    order = sorted(train)
    random.Random(BLOCK_SHUFFLE).shuffle(order)
    return [order[i:i + size] for i in range(0, len(order) - size + 1, size)]


def _classes(image: str, nc: int) -> set[int]:
    return {c for c, n in enumerate(dataset.class_counts([image], nc)) if n}


def cover_classes(seed_set: list[str], source: list[str], nc: int, rng: random.Random) -> list[str]:
    """The drawn seed set with every class in it where the source has it, as a user would start: for each class
    it lacks, one image of the source holding it replaces a drawn image that is not the only holder of a class
    (both chosen with the seed's rng). A class the source lacks stays missing (the caller refuses it)."""
    chosen = list(seed_set)
    have = {p: _classes(p, nc) for p in chosen}
    for c in range(nc):
        if any(c in cl for cl in have.values()):
            continue
        holders = sorted(p for p in source if p not in have and c in _classes(p, nc))
        if not holders:
            continue
        counts = [sum(k in cl for cl in have.values()) for k in range(nc)]
        spare = sorted(p for p, cl in have.items() if all(counts[k] > 1 for k in cl))
        if not spare:
            continue
        out = rng.choice(spare)
        new = rng.choice(holders)
        del have[out]
        have[new] = _classes(new, nc)
    return sorted(have)


def draw(spec: SimSpec, seed: int, train: list[str], nc: int) -> tuple[list[str], list[str]]:
    """(seed set, pool) of one seed: given lists, or drawn with random.Random(seed) from the seed's block
    (spec.disjoint and train large enough) or from the whole train split, the seed set holding every class the
    block has."""
    rng = random.Random(seed)
    in_train = set(train)
    if spec.seed_list is not None:
        seed_set = _read_list(spec.seed_list, "seed-list")
        outside = [p for p in seed_set if p not in in_train]
        if outside:
            raise SimulationError(f"--seed-list {spec.seed_list}: {len(outside)} images are not in the train split "
                                  f"of {spec.data} (e.g. {outside[0]}); list train images only")
    else:
        if spec.seed_set >= len(train):
            raise SimulationError(f"--seed-set {spec.seed_set}: the train split of {spec.data} has {len(train)} "
                                  f"images, which must hold the seed set and the pool; lower --seed-set")
        seed_set = []
    n_pool = None
    if spec.pool_list is None:
        rest_n = len(train) - (len(seed_set) or spec.seed_set)
        n_pool = min(DEFAULT_POOL, rest_n) if spec.pool is None else (spec.pool or rest_n)
        if n_pool > rest_n:
            raise SimulationError(f"--pool {spec.pool}: only {rest_n} train images are left after the seed set of "
                                  f"{len(seed_set) or spec.seed_set}; lower --pool (or --pool 0: all the rest of the "
                                  f"train split)")
    source = train
    if spec.disjoint and spec.seed_list is None and spec.pool_list is None and n_pool:
        bl = blocks(train, spec.seed_set + n_pool)
        if len(bl) > 1:
            source = bl[seed % len(bl)]
    if not seed_set:
        seed_set = sorted(rng.sample(sorted(source), spec.seed_set))
        seed_set = cover_classes(seed_set, source, nc, rng)
    in_seed = set(seed_set)
    rest = [p for p in source if p not in in_seed]
    if spec.pool_list is not None:
        pool_imgs = _read_list(spec.pool_list, "pool-list")
        clash = [p for p in pool_imgs if p in in_seed or p not in in_train]
        if clash:
            raise SimulationError(f"--pool-list {spec.pool_list}: {len(clash)} images are in the seed set or not in "
                                  f"the train split (e.g. {clash[0]}); list train images outside the seed set")
    else:
        if n_pool is None or n_pool > len(rest):
            rest = [p for p in train if p not in in_seed]
        pool_imgs = sorted(rng.sample(sorted(rest), min(n_pool or len(rest), len(rest))))
    return seed_set, pool_imgs


def prepare_seed_data(spec: SimSpec, seed: int, folder: Path) -> dict:
    """The seed's dataset: data.yaml whose train split is the seed set (a list of the original images), the
    original val and test splits, pool/images + pool/labels_hidden (links to the pool images under unique names,
    their labels beside, hidden from training) and full/ (the seed set and the labelled pool: the upper bound's
    training set). Idempotent: a finished folder (seed_data.json) is reused."""
    info_file = folder / "seed_data.json"
    if info_file.is_file():
        return store.read_json(info_file)
    src = dataset.read_data_yaml(spec.data)
    names, splits = src.names, src.splits
    if not splits["test"]:
        raise SimulationError(f"{spec.data}: no test split. The simulation reports test mAP on a split no arm ever "
                              f"trains on; add 'test:' (a folder or .txt list of labelled images) to the data.yaml.")
    if not splits["val"]:
        raise SimulationError(f"{spec.data}: no val split. Each point's training stops and keeps its best epoch by "
                              f"the validation split (never the test split); add 'val:' to the data.yaml.")
    frozen = set(splits["val"]) | set(splits["test"])
    train = [p for p in sorted(dict.fromkeys(splits["train"])) if p not in frozen]
    nc = len(names)
    seed_set, pool_imgs = draw(spec, seed, train, nc)
    seed_counts = dataset.class_counts(seed_set, nc)
    absent = [names[c] for c in range(nc) if seed_counts[c] == 0]
    if absent:
        raise SimulationError(f"classes {absent} have no box in seed {seed}'s seed set of {len(seed_set)} images "
                              f"from {spec.data}: the baseline could never learn them. Raise --seed-set, or give a "
                              f"--seed-list that holds every class")
    pool_boxes = dataset.class_counts(pool_imgs, nc)
    need = sum(spec.round_budgets())
    have = len(pool_imgs) if spec.budget_unit == "images" else sum(pool_boxes)
    if have < need:
        raise SimulationError(f"the pool of seed {seed} holds {have} {spec.budget_unit}, fewer than the rounds' "
                              f"budgets add up to ({need} {spec.budget_unit}); raise --pool or lower --budget/--rounds "
                              f"(--budgets)")
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for sub in ("pool/images", "pool/labels_hidden", "full/images", "full/labels"):
        (tmp / sub).mkdir(parents=True)
    for i, img in enumerate(pool_imgs):
        p = Path(img)
        stem = f"{i:06d}_{p.stem}"  # unique even when two pool images share a file name in other folders
        _link_or_copy(p, tmp / "pool" / "images" / f"{stem}{p.suffix}")
        lab = dataset.label_path(p)
        text = lab.read_text() if lab.is_file() else ""
        (tmp / "pool" / "labels_hidden" / f"{stem}.txt").write_text(text)
        _link_or_copy(p, tmp / "full" / "images" / f"{stem}{p.suffix}")
        (tmp / "full" / "labels" / f"{stem}.txt").write_text(text)
    full = [*seed_set, *(str(folder / "full" / "images" / f"{i:06d}_{Path(p).stem}{Path(p).suffix}")
                         for i, p in enumerate(pool_imgs))]
    (tmp / "seed_set.txt").write_text("\n".join(seed_set) + "\n")
    (tmp / "full.txt").write_text("\n".join(full) + "\n")
    for k in ("val", "test"):
        (tmp / f"{k}.txt").write_text("\n".join(splits[k]) + "\n")
    for name, train_list in (("data.yaml", "seed_set.txt"), ("full.yaml", "full.txt")):
        data = {"path": str(folder), "train": train_list, "val": "val.txt", "test": "test.txt",
                "names": dict(enumerate(names))}
        (tmp / name).write_text(yaml.safe_dump(data, sort_keys=False))
    info = {"seed": seed, "names": names, "seed_set": len(seed_set), "pool": len(pool_imgs),
            "seed_boxes": int(sum(seed_counts)), "pool_boxes": int(sum(pool_boxes)), "val": len(splits["val"]),
            "test": len(splits["test"]), "source": str(Path(spec.data).resolve()),
            "images": sorted([*seed_set, *pool_imgs])}
    store.write_json(tmp / "seed_data.json", info)
    if info_file.is_file():  # another process finished it meanwhile: the same draw, keep the first
        shutil.rmtree(tmp, ignore_errors=True)
        return store.read_json(info_file)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return info


def overlap(infos: dict[int, dict]) -> dict:
    """How much the seeds' drawn images (seed set and pool) overlap: the largest and the mean share of one seed's
    images that another seed also drew (0: independent samples of the data)."""
    sets = {s: set(i.get("images") or ()) for s, i in infos.items()}
    shares = [len(a & b) / max(1, min(len(a), len(b))) for s, a in sets.items() for t, b in sets.items()
              if s < t and a and b]
    return {"max": max(shares, default=0.0), "mean": sum(shares) / len(shares) if shares else 0.0,
            "pairs": len(shares)}
