"""The sample-quality reference floor: each digit dataset's real test images scored against its training set.

    OMP_NUM_THREADS=1 python bench/quality_floor.py [--data-dir ../shared/data] [--n-samples 1000]

The same figures `dgm eval RUN` prints in its "real test vs train" column (n = min(n-samples,
test size) images, seed 0), with the shipped feature networks' test accuracy. Prints a
Markdown table for docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import time

from dgm.data import load_dataset
from dgm.evaluation.features import SHIPPED, load_feature_net
from dgm.evaluation.quality import reference_floor
from dgm.viz.report import COLUMNS, fmt, markdown_table

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--n-samples", type=int, default=1000)
    p.add_argument("--datasets", default="digits,mnist,binarized-mnist")
    args = p.parse_args()
    rows, keys = [], None
    for name in args.datasets.split(","):
        start = time.time()
        floor = reference_floor(load_dataset(name, data_dir=args.data_dir), n_samples=args.n_samples)
        _, info = load_feature_net(SHIPPED[name])
        keys = [c for c in COLUMNS if c[0] in floor]
        rows.append([name, str(floor["n_samples"]), f"{floor['feature_net']} ({100 * info['test_accuracy']:.2f} %)",
                     *[fmt(c[0], floor[c[0]]) for c in keys], fmt("kid_std", floor["kid_std"])])
        print(f"{name}: {time.time() - start:.1f} s", flush=True)
    print(markdown_table(["data", "n", "feature net (test accuracy)", *[c[1] for c in keys], "KID std"], rows))
