"""`semrec report RUN_DIR ... --out DIR`: Markdown + HTML summary of `semrec run` directories."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="summarise run directories as Markdown + HTML with plots",
                       description="Results tables (mean ± std over seeds), the alpha sweep, training curves and "
                                   "code-usage plots of one or more `semrec run` output directories.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="`semrec run` output directories")
    p.add_argument("--out", required=True, help="directory for report.md, report.html and the PNGs")
    p.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    from semrec.report import build_report, report_summary

    print(report_summary(build_report(args.runs, args.out)))
    return 0
