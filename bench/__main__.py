"""``python -m bench [--quick] [--only FAMILY ...] [--json PATH]``: every family side by side."""

import argparse
import importlib
import json
import pkgutil
import sys
import time
from pathlib import Path

from ._harness import Report


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats (a smoke run)")
    parser.add_argument("--only", nargs="*", default=None, help="families to run (module names without bench_)")
    parser.add_argument("--json", default=None, help="where to save results (default bench/results/<time>.json)")
    args = parser.parse_args(argv)
    here = Path(__file__).parent
    families = sorted(m.name[len("bench_") :] for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    if args.only:
        unknown = set(args.only) - set(families)
        if unknown:
            parser.error(f"unknown families {sorted(unknown)}; known: {families}")
        families = [f for f in families if f in args.only]
    report = Report()
    print("machine:", json.dumps(report.machine, default=str))
    for fam in families:
        print(f"== {fam}", flush=True)
        module = importlib.import_module(f"bench.bench_{fam}")
        module.run(report, quick=args.quick)
    path = args.json or str(here / "results" / time.strftime("%Y%m%d-%H%M%S.json"))
    report.save(path)
    missed = [t for t in report.targets if not t["met"]]
    print(f"saved {path}; targets met {len(report.targets) - len(missed)} of {len(report.targets)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
