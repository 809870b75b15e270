"""The ``kdviz`` command: ``demo``, ``serve``, ``export``, ``info``, ``upload``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from kdviz.errors import KdvizError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kdviz", description="See inside knowledge distillation.")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="build the demo runs and serve them")
    demo.add_argument("--build-only", metavar="PATH", help="only build the demo runs into PATH, do not serve")
    demo.add_argument("--out", metavar="DIR", default="runs/demo", help="where to build the runs before serving (default: runs/demo)")
    demo.add_argument("--port", type=int, default=5006)
    demo.add_argument("--address", default=None, help="address to bind (default: localhost only)")
    demo.add_argument("--retrain", action="store_true", help="retrain the demo models from fixed seeds into assets/ first")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.add_argument("--no-attributions", action="store_true", help="skip explaining the demo models (about 15 s on 2 cores)")

    serve = commands.add_parser("serve", help="serve a read-only dashboard of runs")
    serve.add_argument("runs", nargs="+", metavar="RUN", help="run directories or URLs (s3://…), or directories and "
                       "prefixes holding *.kdviz runs")
    serve.add_argument("--port", type=int, default=5006)
    serve.add_argument("--address", default=None, help="address to bind (default: localhost only)")
    serve.add_argument("--warm", action="store_true", help="read every page's data of every run before serving")
    serve.add_argument("--num-procs", type=int, default=1, metavar="N", help="serve from N processes (default 1)")
    serve.add_argument("--origin", action="append", default=[], metavar="HOST[:PORT]",
                       help="a public name the app is reached under through a proxy or load balancer (repeatable)")

    export = commands.add_parser("export", help="write one self-contained, offline HTML file of a run's views")
    export.add_argument("run", metavar="RUN", help="a run directory, or a directory holding *.kdviz runs")
    export.add_argument("out", metavar="OUT.html")
    export.add_argument("--sample", type=int, default=0, help="the sample shown in per-sample views (default 0)")
    export.add_argument("--pages", nargs="+", metavar="PAGE", help="pages to include (default: all): overview logits "
                        "attention features attribution training")

    info = commands.add_parser("info", help="print a readable summary of a run")
    info.add_argument("run", metavar="RUN")

    upload = commands.add_parser("upload", help="publish a local run to object storage (any fsspec URL), meta.json last")
    upload.add_argument("run", metavar="RUN", help="a local run directory")
    upload.add_argument("url", metavar="URL", help="where to publish it, for example s3://bucket/runs/NAME.kdviz")
    upload.add_argument("--overwrite", action="store_true", help="replace a run already published there")

    args = parser.parse_args(argv)
    try:
        return _dispatch(args)
    except KdvizError as exc:
        print(f"kdviz: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "upload":
        from kdviz import remote
        from kdviz.store import Run

        run = Run.open(args.run)
        if run.remote:
            raise KdvizError(f"{args.run!r} is already on object storage; upload publishes a local run")
        url = remote.upload(run.path, args.url, overwrite=args.overwrite)
        print(f"published {run.name} ({run.n_samples} samples) at {url}")
        return 0
    if args.command == "info":
        from kdviz.store import Run

        print(Run.open(args.run).info())
        return 0
    if args.command == "export":
        from kdviz.app.export import export_html

        path = export_html([args.run], args.out, sample=args.sample, pages=args.pages)
        print(f"kdviz: wrote {path} ({path.stat().st_size / 1e6:.1f} MB, opens offline)")
        return 0
    if args.command == "serve":
        from kdviz.app.serve import serve

        serve(args.runs, port=args.port, address=args.address, warm=args.warm, num_procs=args.num_procs,
              origins=args.origin)
        return 0
    return _demo(args)


def _demo(args: argparse.Namespace) -> int:
    from kdviz.demo.build import build_demo_runs

    if args.retrain:
        from kdviz.demo.train import retrain
        from kdviz.demo.weights import assets_dir

        target = assets_dir()
        print(f"kdviz: retraining the demo models into {target}", flush=True)
        retrain(target, progress=not args.quiet)
    out = Path(args.build_only or args.out)
    runs = build_demo_runs(out, progress=not args.quiet, attributions=not args.no_attributions)
    for run in runs:
        print(run.info(), flush=True)
    if args.build_only:
        return 0
    from kdviz.app.serve import serve

    serve([run.path for run in runs], port=args.port, address=args.address)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
