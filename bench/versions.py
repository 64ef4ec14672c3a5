"""``python -m bench.versions REV [--only FAMILY ...] [--rounds N] [--quick]``: this tree against REV.

"No family gets slower" is a claim about two versions of our code on one machine, so both run here,
in alternation (REV, this tree, REV, this tree, ...), each round a fresh process of ``python -m
bench`` on the same families. REV is checked out into a temporary git worktree that is removed
afterwards. For every row (family, case, name) the table gives the median over rounds of each
version and the ratio this/REV; rows of anchors (scipy, numpy, sklearn, dask: code that is the same
in both runs) show how much the machine itself drifted between the runs, and the last column divides
by that drift (the median anchor ratio of the family).
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

#: Row names that time our code; every other row of a family times an anchor or the machine.
OURS_PREFIXES = ("ours", "linalg_lowrank", "randomized_svd", "interpolative_decomposition", "muon-", "polar_express")
OURS_PREFIXES += ("simulate_weight_rms", "auto", "hutch", "diag", "trace", "xdiag", "xtrace", "products", "input")
OURS_PREFIXES += ("first_call", "import", "top_singular", "spectral_norm", "inverse_pth_root", "shampoo")


def _is_ours(name):
    return name.startswith(OURS_PREFIXES)


def _run(tree, python, families, quick, out):
    cmd = [python, "-m", "bench", "--json", str(out), "--only", *families] + (["--quick"] if quick else [])
    subprocess.run(cmd, cwd=tree, check=True, stdout=subprocess.DEVNULL)
    return json.loads(Path(out).read_text())["rows"]


def _medians(runs):
    by_key = {}
    for rows in runs:
        for r in rows:
            by_key.setdefault((r["family"], r["case"], r["name"]), []).append(r["median_s"])
    return {k: statistics.median(v) for k, v in by_key.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.versions", description=__doc__)
    parser.add_argument("rev", help="the git revision to compare against (e.g. a commit before a change)")
    parser.add_argument("--only", nargs="+", required=True, help="bench families (module names without bench_)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default=None, help="save the table here")
    args = parser.parse_args(argv)
    here = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="bench_versions_") as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", str(base), args.rev], cwd=here, check=True)
        try:
            before, after = [], []
            for i in range(args.rounds):
                before.append(_run(base, sys.executable, args.only, args.quick, Path(tmp) / f"b{i}.json"))
                after.append(_run(here, sys.executable, args.only, args.quick, Path(tmp) / f"a{i}.json"))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=here, check=False)
    b, a = _medians(before), _medians(after)
    drift = {}
    for key in b.keys() & a.keys():
        if not _is_ours(key[2]) and b[key] > 0 and a[key] == a[key]:
            drift.setdefault(key[0], []).append(a[key] / b[key])
    drift = {fam: statistics.median(v) for fam, v in drift.items()}
    table = []
    print(f"{'family':<12} {'case':<34} {'name':<28} {args.rev[:10]:>10} {'this':>10} {'ratio':>7} {'/drift':>7}")
    for key in sorted(b.keys() & a.keys()):
        if not _is_ours(key[2]) or not b[key] > 0:
            continue
        ratio = a[key] / b[key]
        corrected = ratio / drift.get(key[0], 1.0)
        table.append({"family": key[0], "case": key[1], "name": key[2], "before_s": b[key], "after_s": a[key],
                      "ratio": ratio, "ratio_over_anchor_drift": corrected})  # fmt: skip
        print(f"{key[0]:<12} {key[1][:34]:<34} {key[2][:28]:<28} {b[key] * 1e3:10.3f} {a[key] * 1e3:10.3f} "
              f"{ratio:7.3f} {corrected:7.3f}")  # fmt: skip
    print("anchor drift (this/base, median of anchor rows):", {k: round(v, 3) for k, v in drift.items()})
    if args.json:
        Path(args.json).write_text(json.dumps({"rev": args.rev, "rows": table, "anchor_drift": drift}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
