"""python -m bench.report RUN_DIR [--out DIR] [--baseline FRAMEWORK]"""
import argparse
import sys

from bench.report import ReportInputError, write_report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__)
    ap.add_argument("run_dir", help="results/<run-id> directory written by the harness")
    ap.add_argument("--out", default=None, help="output directory (default reports/<run-id>)")
    ap.add_argument("--baseline", default=None,
                    help="framework the ratios divide by (default torch, else the first by name)")
    args = ap.parse_args(argv)
    try:
        paths = write_report(args.run_dir, args.out, baseline=args.baseline)
    except ReportInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"report: {paths['markdown']}\nreport: {paths['html']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
