"""Turn the nine LIVR datasets, as published, into livr's dataset-folder format.

    python tools/prepare_livr_data.py --out data/livr \\
        --source counting=/data/pixmo-count --source jigsaw=/data/coco \\
        --source object_localization=/data/coco --source visual_correspondence=/data/hpatches-sequences-release \\
        --source art_style=/data/artbench-10-imagefolder-split --source semantic_correspondence=/data/SPair-71k \\
        --source functional_correspondence=/data/funkpoint --source relative_reflectance=/data/multi_illumination \\
        --source visual_similarity=/data/nights
    python tools/prepare_livr_data.py --out data/livr-generated --generated   # the procedural versions, no data needed

Writes ``<out>/<task>/{train,val,test}.jsonl`` plus ``images/`` (``livr.data.load_examples`` reads
them; ``livr train --data <out>/<task>``) and ``<out>/manifest.json`` (sources, sizes, seed). Sizes:
1,000 training examples per task (the paper's), the paper's test size per task, 100 validation
examples (the paper does not give one). Each loader documents the layout it expects
(``livr.tasks.<module>``); ``livr.tasks.fixtures`` writes a tiny example of each.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

from livr.data import write_examples
from livr.tasks import TASKS, get_task

SPLITS = ("train", "val", "test")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Write livr's jsonl dataset folders from the nine LIVR datasets (or their procedural versions).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="tasks: " + ", ".join(TASKS),
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (one sub-folder per task)")
    parser.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="TASK=ROOT",
        help="a task and the root folder of its dataset as published; repeat for each task",
    )
    parser.add_argument(
        "--generated",
        action="store_true",
        help="write the procedural version of every task not given a --source",
    )
    parser.add_argument(
        "--train-size", type=int, default=1000, help="training examples per task (paper: 1000)"
    )
    parser.add_argument("--val-size", type=int, default=100, help="validation examples per task")
    parser.add_argument(
        "--test-size", type=int, default=None, help="test examples per task (default: the paper's)"
    )
    parser.add_argument("--image-size", type=int, default=96, help="image side of generated examples")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (and generator seed)")
    args = parser.parse_args(argv)
    sources = {}
    for item in args.source:
        task, sep, root = item.partition("=")
        if not sep or not root:
            parser.error(f"--source {item!r} is not TASK=ROOT")
        try:
            sources[get_task(task).name] = Path(root)
        except KeyError as exc:
            parser.error(str(exc))
    if not sources and not args.generated:
        parser.error("give at least one --source TASK=ROOT, or --generated")
    args.sources = sources
    return args


def sizes(task: str, args: argparse.Namespace) -> dict[str, int]:
    test = args.test_size if args.test_size is not None else TASKS[task].test_size
    return {"train": args.train_size, "val": args.val_size, "test": test}


def prepare(args: argparse.Namespace) -> dict:
    tasks = list(args.sources) + ([t for t in TASKS if t not in args.sources] if args.generated else [])
    manifest = {"seed": args.seed, "tasks": {}}
    jobs = [(task, split) for task in tasks for split in SPLITS]
    for task, split in tqdm(jobs, desc="preparing", unit="split"):
        spec = TASKS[task]
        want = sizes(task, args)[split]
        if task in args.sources:
            examples = spec.load(args.sources[task], split, limit=want, seed=args.seed)
            source = str(args.sources[task])
        else:
            # distinct seeds per split, so generated train/val/test never share an example
            split_seed = args.seed * 3 + SPLITS.index(split)
            examples = spec.generate(want, seed=split_seed, image_size=args.image_size)
            source = "generated"
        write_examples(examples, args.out / task, split)
        entry = manifest["tasks"].setdefault(task, {"source": source, "splits": {}})
        entry["splits"][split] = {"requested": want, "written": len(examples)}
        if len(examples) < want:
            tqdm.write(f"{task}/{split}: the data gave {len(examples)} of the {want} requested examples")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    manifest = prepare(args)
    for task, entry in manifest["tasks"].items():
        counts = ", ".join(f"{s} {v['written']}" for s, v in entry["splits"].items())
        print(f"{task:26s} {counts}  ({entry['source']})")
    print(f"wrote {args.out} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
