"""``bcauto audit``: load the data, audit it, write report.json and contact sheets, print or emit the summary."""

from __future__ import annotations

import sys

from rich.markup import escape

from bcauto.errors import BcautoError


def run_audit_command(args, console) -> int:
    """The body of ``bcauto audit`` (``args`` from its argparse subparser). Returns the exit code."""
    from bcauto.audit.clean import write_clean_npz
    from bcauto.audit.render import print_summary, write_outputs
    from bcauto.audit.run import AuditOptions, audit
    from bcauto.data.sources import load_data
    from bcauto.plugins import components

    if args.image_size < 8:
        raise BcautoError(f"--image-size must be 8 or more, got {args.image_size}")
    if args.write_clean and not str(args.write_clean).lower().endswith(".npz"):
        raise BcautoError(f"--write-clean {args.write_clean}: the file name must end in .npz")
    quiet = args.json  # stdout carries the JSON report alone
    status = _status(console, quiet)
    comps = components()
    with status(f"loading data {args.data!r}"):
        data = load_data(args.data, args.image_size, comps, {"on_bad_image": args.on_bad_image})
    if not quiet:
        for note in data.notes:
            console.print(f"[cyan]note:[/] {escape(note)}")
    options = AuditOptions(seed=args.seed)
    with status("auditing") as live:
        report = audit(data, options, progress=(lambda message: live.update(f"auditing: {message}")) if live else None)
    paths = write_outputs(report, data, args.out)
    removed = None
    if args.write_clean:
        clean_path, removed = write_clean_npz(data, report, args.write_clean)
    if quiet:
        sys.stdout.write(report.to_json() + "\n")
        return 0
    for note in report.notes[len(data.notes) :]:  # the data's own notes were printed after loading
        console.print(f"[cyan]note:[/] {escape(note)}")
    print_summary(report, console)
    sheets = [str(p) for kind, p in paths.items() if kind != "report"]
    console.print(f"report: {escape(str(paths['report']))}" + (f"; contact sheets: {escape(', '.join(sheets))}" if sheets else ""))
    if removed is not None:
        console.print(
            f"clean data: {escape(str(clean_path))} ({len(data.labels) - len(removed)} images, {len(removed)} removed); "
            f"use it with --data {escape(str(clean_path))}"
        )
    return 0


class _Quiet:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _status(console, quiet: bool):
    return (lambda message: _Quiet()) if quiet else console.status
