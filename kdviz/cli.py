"""The ``kdviz`` command: ``demo``, ``serve``, ``export``, ``info``, ``verify``, ``upload``.

A failure caused by a run or an input prints one line naming the cause and the fix, and exits with 2; ``--debug``
shows the traceback instead."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from kdviz.errors import KdvizError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kdviz", description="See inside knowledge distillation.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a failure")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="build the demo runs and serve them")
    demo.add_argument("--build-only", metavar="PATH", help="only build the demo runs into PATH, do not serve")
    demo.add_argument("--out", metavar="DIR", default="runs/demo", help="where to build the runs before serving (default: runs/demo)")
    demo.add_argument("--port", type=int, default=5006)
    demo.add_argument("--address", default=None, help="address to bind (default: localhost only)")
    demo.add_argument("--retrain", action="store_true", help="retrain the demo models from fixed seeds into assets/ first")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.add_argument("--present", action="store_true", help="serve in presentation mode (text of 18 px and more)")
    demo.add_argument("--no-attributions", action="store_true", help="skip explaining the demo models (about 15 s on 2 cores)")

    serve = commands.add_parser("serve", help="serve a read-only dashboard of runs")
    serve.add_argument("runs", nargs="+", metavar="RUN", help="run directories or URLs (s3://…), or directories and "
                       "prefixes holding *.kdviz runs")
    serve.add_argument("--port", type=int, default=5006)
    serve.add_argument("--address", default=None, help="address to bind (default: localhost only)")
    serve.add_argument("--warm", action="store_true", help="read every page's data of every run before serving")
    serve.add_argument("--present", action="store_true",
                       help="presentation mode for a lecture: text of 18 px and more, thicker lines (?present=0 opts out)")
    serve.add_argument("--num-procs", type=int, default=1, metavar="N", help="serve from N processes (default 1)")
    serve.add_argument("--origin", action="append", default=[], metavar="HOST[:PORT]",
                       help="a public name the app is reached under through a proxy or load balancer (repeatable)")

    export = commands.add_parser("export", help="write one self-contained, offline HTML file of a run's views")
    export.add_argument("run", metavar="RUN", help="a run directory, or a directory holding *.kdviz runs")
    export.add_argument("out", metavar="OUT.html")
    export.add_argument("--sample", type=int, default=0, help="the sample shown in per-sample views (default 0)")
    export.add_argument("--pages", nargs="+", metavar="PAGE", help="pages to include (default: all): overview logits "
                        "attention features attribution training")
    export.add_argument("--T", type=float, default=None, help="the temperature of the logit views (default 4)")
    export.add_argument("--measure", default=None, help="the Logits explorer's measure: kl reverse_kl js jsd skew_kl tv "
                        "hellinger renyi teacher_entropy student_entropy (default kl)")
    export.add_argument("--alpha", type=float, default=None, help="the order α of the Rényi divergence (--measure renyi)")

    info = commands.add_parser("info", help="print a readable summary of a run")
    info.add_argument("run", metavar="RUN")

    verify = commands.add_parser("verify", help="read every chunk of runs and list what is damaged (exit 2 if any)")
    verify.add_argument("runs", nargs="+", metavar="RUN", help="run directories or URLs, or directories holding *.kdviz runs")
    verify.add_argument("--quiet", action="store_true", help="no progress bar")

    upload = commands.add_parser("upload", help="publish a local run to object storage (any fsspec URL), meta.json last")
    upload.add_argument("run", metavar="RUN", help="a local run directory")
    upload.add_argument("url", metavar="URL", help="where to publish it, for example s3://bucket/runs/NAME.kdviz")
    upload.add_argument("--overwrite", action="store_true", help="replace a run already published there")

    args = parser.parse_args(argv)
    try:
        return _dispatch(args)
    except KdvizError as exc:
        if args.debug:
            raise
        print(f"kdviz: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


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

        run = Run.open(args.run)
        summary = run.info()
        run.check_structure()
        print(summary)
        return 0
    if args.command == "verify":
        return _verify(args.runs, progress=not args.quiet)
    if args.command == "export":
        from kdviz.app.export import export_html

        logits = {key: value for key, value in (("measure", args.measure), ("alpha", args.alpha)) if value is not None}
        path = export_html([args.run], args.out, sample=args.sample, pages=args.pages, T=args.T, state={"logits": logits})
        print(f"kdviz: wrote {path} ({path.stat().st_size / 1e6:.1f} MB, opens offline)")
        return 0
    if args.command == "serve":
        from kdviz.app.serve import serve

        serve(args.runs, port=args.port, address=args.address, warm=args.warm, num_procs=args.num_procs,
              origins=args.origin, present=args.present)
        return 0
    return _demo(args)


def _verify(paths: Sequence[str], *, progress: bool) -> int:
    """Verify every run: 0 when all are intact, 2 when any is damaged or cannot be opened (each listed)."""
    from kdviz import temporaries
    from kdviz.store import Run, iter_run_paths

    damaged = 0
    for path in iter_run_paths(list(paths)):
        if not isinstance(path, str):
            for stale in temporaries.remove_stale(Path(path).expanduser().absolute().parent):
                print(f"kdviz: removed {stale.name}, left by a capture whose process is gone")
        try:
            run = Run.open(path)
            damage = run.verify(progress=progress)
        except KdvizError as exc:
            print(f"{path}: cannot be opened: {_one_line(exc)}")
            damaged += 1
            continue
        if damage:
            damaged += 1
            print(f"{path}: DAMAGED, {len(damage)} problem(s):")
            for item in damage:
                print(f"  {item}")
        else:
            print(f"{path}: intact ({len(run.manifest or run.array_keys())} arrays)")
    if damaged:
        print(f"kdviz: {damaged} run(s) damaged; capture them again or restore them from a copy", file=sys.stderr)
        return 2
    return 0


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

    serve([run.path for run in runs], port=args.port, address=args.address, present=args.present)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
