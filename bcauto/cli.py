"""The ``bcauto`` command line: search, best, refit, evaluate, predict, adapt, suggest, audit, plugins, ui."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.markup import escape

from bcauto import __version__
from bcauto.errors import BcautoError
from bcauto.frameworks import quiet_frameworks
from bcauto.interrupts import sigterm_as_ctrl_c
from bcauto.text import plural
from bcauto.uris import check_stores, redact_uri

DEFAULT_STORAGE = "sqlite:///optuna.db"
DEFAULT_TRACKING = "sqlite:///mlflow.db"
# commands that neither train nor track start without TensorFlow and MLflow (seconds each); value: uses Optuna
LIGHT_COMMANDS = {"best": True, "plugins": False, "new-plugin": False}
ADAPT_IM_HELP = (
    "adapt to the images first, labels unread, further than --adapt-bn: recompute the BatchNorm statistics, then "
    "fine-tune the layers before the classifier so each image gets a confident class and the images spread over "
    "the classes (information maximization, SHOT-IM; among --classes when given); implies --adapt-bn"
)

CLASSES_HELP = (
    "predict only among these of the model's classes, comma-separated (the ones your slides can show, "
    "e.g. the white cells: basophil,eosinophil,lymphocyte,monocyte,neutrophil); default: all of them"
)


def refit_epochs(value: str) -> str | int:
    """``--epochs`` of ``bcauto refit``: ``best``, ``trained`` or a whole number of epochs."""
    from bcauto.refit_trials import EPOCH_MODES

    if value in EPOCH_MODES:
        return value
    try:
        return positive_int(value)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected {', '.join(EPOCH_MODES)} or a number of epochs (1 or more), got {value!r}") from None


def epochs_or_auto(value: str) -> int | None:
    """``--epochs`` of ``bcauto adapt``: a whole number, or ``auto`` (None)."""
    if value.strip().lower() == "auto":
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of epochs or 'auto', got {value!r}") from None


def studies_dir() -> Path:
    """The shipped study files: the package ``bcauto.studies`` (a checkout's studies/ folder, or a wheel's copy)."""
    from importlib.resources import files

    return Path(str(files("bcauto.studies")))


def has_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def default_study(console, gpu: bool) -> Path:
    name = "default.toml" if gpu else "cpu.toml"
    path = studies_dir() / name
    why = "a GPU is present" if gpu else "no GPU was found, so the small CPU study runs"
    console.print(f"study: {path} ({why}; pass --study FILE to choose)")
    return path


def cmd_search(args, console) -> int:
    from bcauto.config import check_components, load_study
    from bcauto.data.domains import SEPARATOR
    from bcauto.data.sources import load_data
    from bcauto.plugins import components
    from bcauto.study import SearchRequest, run_search

    comps = components()
    for failure in comps.failures:
        console.print(
            f"[yellow]warning:[/] plugin {escape(failure.package)} ({escape(failure.entry_point)}) failed to load: {escape(failure.error)}"
        )
    gpu = has_gpu()
    if args.workers < 0:
        raise BcautoError(f"--workers must be 0 or more, got {args.workers}")
    check_stores(args.storage, args.tracking_uri)  # before the data is read: nothing is created on a bad URI
    cfg = load_study(args.study) if args.study else load_study(default_study(console, gpu))
    if args.max_failures is not None:
        cfg = cfg.with_option("--max-failures", "study", max_failures=args.max_failures)
    check_components(cfg, comps)
    seed = args.seed if args.seed is not None else cfg.study.seed
    spec = SEPARATOR.join(args.data) if args.data else cfg.data.source
    options = {"seed": seed, "synthetic_size": cfg.data.synthetic_size, "on_bad_image": args.on_bad_image}
    with console.status(f"loading data {spec!r}"):
        data = load_data(spec, cfg.data.image_size, comps, options)
    for note in data.notes:
        console.print(f"[cyan]note:[/] {escape(note)}")
    counts = ", ".join(f"{n}={c}" for n, c in zip(data.class_names, data.class_counts()))
    console.print(
        f"data: {data.source}: {plural(len(data.labels), 'image')} {data.image_size}x{data.image_size}, "
        f"{plural(data.num_classes, 'class')} ({counts})"
    )
    if data.domain_names:
        sizes = [int((data.domains == i).sum()) for i in range(len(data.domain_names))]
        console.print(
            "domains: "
            + ", ".join(f"{escape(name)} ({plural(n, 'image')})" for name, n in zip(data.domain_names, sizes))
            + f"; the search validates on {escape(cfg.data.validation_domain or data.domain_names[-1])}, which it never trains on"
        )
    request = SearchRequest(
        cfg=cfg,
        data=data,
        study_name=args.name or cfg.name,
        trials=args.trials or cfg.study.trials,
        storage=args.storage,
        tracking_uri=args.tracking_uri,
        seed=seed,
        timeout=args.timeout if args.timeout is not None else cfg.study.timeout,
        has_gpu=gpu,
        work_dir=args.work_dir,
        workers=args.workers,
        worker_memory_gb=args.worker_memory_gb,
        gpus=args.gpus.split(",") if args.gpus else None,
    )
    try:
        study = run_search(request, comps, console)
    except KeyboardInterrupt:  # the search has said what it kept and how to go on
        return 130
    console.print(
        f"Optuna: {redact_uri(args.storage)}  MLflow: {redact_uri(args.tracking_uri)} "
        f"(open with `bcauto ui --name {request.study_name}` or `mlflow ui`)",
        soft_wrap=True,
    )
    return 0 if not study.user_attrs.get("stopped_because") else 3


def cmd_best(args, console) -> int:
    from bcauto.leaderboard import Leaderboard, all_params, leaderboard_json, metric_names, ranked_trials
    from bcauto.stores import load_existing_study

    study = load_existing_study(args.name, args.storage)
    ranked = ranked_trials(study)
    if not ranked:
        raise BcautoError(f"study {study.study_name!r} has no completed trial yet")
    best, names = ranked[0], metric_names(study)
    info = {
        "study": study.study_name,
        "metric": names[0] if len(names) == 1 else list(names),
        "number": best.number,
        "value": best.values[0],
        "values": best.values,
        "params": all_params(best),
        "mlflow_run_id": best.user_attrs.get("mlflow_run_id"),
    }
    if len(study.directions) > 1:
        info["pareto_front"] = [{"number": t.number, "values": t.values} for t in ranked]
    info["leaderboard"] = leaderboard_json(study, args.top)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    console.print(Leaderboard(study, args.top))
    console.print(
        f"best: trial {best.number}, {names[0]} {best.values[0]:.4f}, MLflow run {info['mlflow_run_id'] or '-'} "
        "(every parameter in full: `bcauto best --json`)",
        soft_wrap=True,
        highlight=False,
    )
    return 0


# A component kind is named in the singular everywhere a user types or reads it (`bcauto plugins`, `bcauto new-plugin`).
PLUGIN_KINDS = {
    "backbones": "backbone",
    "augmentations": "augmentation",
    "imbalance": "imbalance",
    "datasets": "dataset",
    "shifts": "shift",
    "canonicalizers": "canonicalizer",
}
PLUGIN_COLUMNS = ("kind", "name", "package", "version", "description")


def plugin_lines(rows: list[dict]) -> list[str]:
    """One line per component, columns aligned with spaces and the description last, in full (for pipes and files)."""
    widths = [max(len(column), *(len(row[column]) for row in rows)) for column in PLUGIN_COLUMNS[:-1]]
    return [
        "  ".join([*(str(row[c]).ljust(w) for c, w in zip(PLUGIN_COLUMNS, widths)), row["description"]]).rstrip()
        for row in [dict(zip(PLUGIN_COLUMNS, PLUGIN_COLUMNS)), *rows]
    ]


def cmd_plugins(args, console) -> int:
    from rich.padding import Padding
    from rich.table import Table
    from rich.text import Text

    from bcauto.plugins import components

    comps = components()
    rows = [
        {
            "kind": PLUGIN_KINDS.get(kind, kind),
            "name": name,
            "package": p.package,
            "version": p.version,
            "plugin": p.plugin,
            "description": getattr(spec, "description", ""),
        }
        for kind, registry in comps.by_kind().items()
        for name, spec, p in registry
    ]
    failures = [vars(f) for f in comps.failures]
    if args.json:
        print(json.dumps({"components": rows, "failures": failures}, indent=2))
        return 0
    if console.is_terminal:  # a heading per kind; descriptions wrap in their column, names and packages never cut
        name_width = max((len(row["name"]) for row in rows), default=0)
        package_width = max((len(f"{row['package']} {row['version']}") for row in rows), default=0)
        for kind in dict.fromkeys(row["kind"] for row in rows):
            grid = Table.grid(padding=(0, 2))
            grid.add_column(min_width=name_width, no_wrap=True)
            grid.add_column(min_width=package_width, no_wrap=True)
            grid.add_column(overflow="fold")
            for row in (row for row in rows if row["kind"] == kind):
                grid.add_row(row["name"], f"{row['package']} {row['version']}", row["description"])
            console.print(Text(kind, style="bold"))
            console.print(Padding(grid, (0, 0, 0, 2)))
    else:
        for line in plugin_lines(rows):
            console.print(line, soft_wrap=True, markup=False, highlight=False)
    for f in failures:
        console.print(f"[red]failed to load[/] {escape(f['package'])} ({escape(f['entry_point'])}): {escape(f['error'])}", soft_wrap=True)
    return 0


def cmd_ui(args, console) -> int:
    from bcauto.ui import serve

    return serve(args, console)


def cmd_new_plugin(args, console) -> int:
    from bcauto.scaffold import new_plugin

    target = escape(str(new_plugin(args.kind, args.name, args.dir)))
    console.print(
        f"created {target}: `pip install -e {target}`, then `bcauto plugins` lists {args.name} and `pytest {target}` runs its tests",
        soft_wrap=True,
    )
    return 0


def cmd_refit(args, console) -> int:
    from bcauto.plugins import components
    from bcauto.refit import RefitRequest, refit

    request = RefitRequest(
        study_name=args.name,
        storage=args.storage,
        tracking_uri=args.tracking_uri,
        top=args.top,
        data=args.data,
        out=args.out,
        study_file=args.study,
        epochs=args.epochs,
        image_size=args.image_size,
        has_gpu=has_gpu(),
    )
    try:
        result = refit(request, components(), console)
    except KeyboardInterrupt:  # refit has said what it kept and how to go on
        return 130
    registered = f", registered as {result.model_name} version {result.model_version}" if result.model_version else ""
    console.print(
        f"saved {escape(str(result.path))} (trials {', '.join(map(str, result.info['trials']))}); "
        f"MLflow run {result.run_id or '-'}{registered}"
    )
    return 0


def cmd_evaluate(args, console) -> int:
    from rich.console import Console

    from bcauto.bundle import load_bundle
    from bcauto.data.sources import load_data
    from bcauto.evaluate import class_subset, confusion_png, evaluate, render, shift_steps
    from bcauto.plugins import components
    from bcauto.progress import transient_progress
    from bcauto.sanity import evaluation_causes, prediction_problem

    bundle = load_bundle(args.model)
    allowed = class_subset(args.classes, bundle.class_names)
    comps = components()
    data = load_data(args.data, bundle.image_size, comps, {"seed": args.seed})
    adapted = adapt_without_labels(args, bundle, data.images, data.source, allowed, Console(stderr=True) if args.json else console)
    shifts = comps.shifts if args.shift else None
    steps = 1 + (shift_steps(shifts) if shifts is not None else 0)
    with transient_progress(Console(stderr=True)) as progress:
        task = progress.add_task("evaluating", total=steps)
        result, scores, labels = evaluate(
            bundle,
            data,
            shifts,
            args.tta,
            args.seed,
            on_step=lambda what: progress.update(task, advance=1, description=what),
            allowed=allowed,
        )
    problem = prediction_problem(scores.confusion, bundle.class_names, "the evaluation images")
    if problem:  # a model that learned nothing: its scores alone do not say so
        result["warning"] = f"the model {problem}. {evaluation_causes(bundle.info, data.fingerprint())}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    image = confusion_png(
        scores,
        bundle.class_names,
        labels,
        out / "confusion_matrix.png",
        title=f"{Path(args.model).name} on {Path(data.source).name}: macro-F1 {scores.macro_f1:.3f}",
    )
    result["confusion_matrix"] = str(image)
    if adapted is not None:
        result["adapt_im" if args.adapt_im else "adapt_bn"] = adapted
    (out / "evaluation.json").write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        render(result, console)
        console.print(f"written: {escape(str(out / 'evaluation.json'))}, {escape(str(image))}")
    if problem:
        (Console(stderr=True) if args.json else console).print(f"[yellow]warning:[/] {escape(result['warning'])}")
    return 0


def adapt_without_labels(args, bundle, images, source: str, allowed, console) -> dict | None:
    """``--adapt-bn`` or ``--adapt-im`` on the images to score or predict, their labels unread: the record of what
    was done (None when neither was asked for)."""
    if args.adapt_im:
        from bcauto.test_time import adapt_im_summary

        with console.status(f"information maximization on {len(images)} images"):
            record, line = adapt_im_summary(bundle.model, images, source, allowed, seed=args.seed)
    elif args.adapt_bn:
        from bcauto.test_time import adapt_bn_summary

        record, line = adapt_bn_summary(bundle.model, images, source)
    else:
        return None
    console.print(escape(line))
    return record


def cmd_predict(args, console) -> int:
    from rich.console import Console

    from bcauto.bundle import load_bundle
    from bcauto.evaluate import class_subset
    from bcauto.predict import predict_to_csv

    bundle = load_bundle(args.model)
    allowed = class_subset(args.classes, bundle.class_names)
    prepare = None
    if args.adapt_bn or args.adapt_im:

        def prepare(images):
            adapt_without_labels(args, bundle, images, ", ".join(args.inputs), allowed, console)

    skipped: list[str] | None = [] if args.on_bad_image == "skip" else None
    rows = predict_to_csv(bundle, args.inputs, args.out, args.tta, Console(stderr=True), prepare=prepare, skipped=skipped, allowed=allowed)
    console.print(f"{rows} predictions written to {escape(str(args.out))}" + (" (TTA: 8 dihedral views)" if args.tta else ""))
    if skipped:
        console.print(f"[yellow]skipped {plural(len(skipped), 'undecodable image file')}:[/] " + escape("; ".join(skipped)))
    return 0


def cmd_adapt(args, console) -> int:
    from bcauto.adapt import AdaptRequest, adapt
    from bcauto.plugins import components

    request = AdaptRequest(
        model=args.model,
        data=args.data,
        shots=args.shots,
        pool=args.pool,
        per_class=args.per_class,
        choose_shots=args.choose_shots,
        seed=args.seed,
        epochs=args.epochs,
        learning_rate=args.lr,
        out=args.out,
        adapt_bn=args.adapt_bn,
        adapt_im=args.adapt_im,
        pseudo_labels=args.pseudo_labels,
        align_to_shots=args.align_to_shots,
        classes=args.classes,
        tta=args.tta,
        ensemble=args.ensemble,
        tracking_uri=args.tracking_uri,
    )
    result = adapt(request, components(), console)
    console.print(
        f"saved {escape(str(result.path))} (adapted from {escape(str(result.info['adapted']['parent']))}); "
        f"MLflow run {result.run_id or '-'}"
    )
    return 0


def cmd_suggest(args, console) -> int:
    from bcauto.suggest import SUGGESTED_FILE, SuggestRequest, suggest

    request = SuggestRequest(args.model, args.inputs, args.shots, args.out, args.seed, args.adapt_bn, args.adapt_im, args.classes)
    copies = suggest(request, console)
    out = escape(str(Path(args.out)))
    options = "".join(f" {flag}" for flag, on in (("--adapt-bn", args.adapt_bn), ("--adapt-im", args.adapt_im)) if on)
    options += f" --classes {args.classes}" if args.classes else ""
    console.print(
        f"copied {plural(len(copies), 'image')} to label into {out} ({SUGGESTED_FILE} there says where each came from).\n"
        f"Next: make one subfolder per class in {out}, named as the model's classes, move each image into the folder "
        "of its class, then run"
    )
    # one line however long, for the terminal to wrap: a line break inside would cut the command when copied
    console.print(
        f"  bcauto adapt {escape(args.model)} --data {out} "
        + " ".join(f"--pool {escape(i)}" for i in args.inputs)
        + escape(options)
        + " --pseudo-labels",
        soft_wrap=True,
    )
    return 0


def cmd_audit(args, console) -> int:
    from bcauto.audit.command import run_audit_command

    return run_audit_command(args, console)


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (0 or a negative count is a usage error, not "the default")."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bcauto", description="AutoML experiment runner for blood-cell image classification.")
    parser.add_argument("--version", action="version", version=f"bcauto {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    # options several commands share, defined once and given to each through argparse's parents (where a
    # command words an option its own way, such as search's --storage, it keeps its own)
    tracking = argparse.ArgumentParser(add_help=False)
    tracking.add_argument("--tracking-uri", default=DEFAULT_TRACKING, help=f"MLflow tracking URI (default {DEFAULT_TRACKING})")
    storage = argparse.ArgumentParser(add_help=False)
    storage.add_argument("--storage", default=DEFAULT_STORAGE, help=f"Optuna storage URL (default {DEFAULT_STORAGE})")
    study_name = argparse.ArgumentParser(add_help=False)
    study_name.add_argument("--name", help="study name (needed when the storage holds several)")

    search = sub.add_parser(
        "search",
        parents=[tracking],
        help="run or resume an Optuna study, every trial logged to MLflow",
        description="Run (or resume) a study: each trial builds, trains and scores one classifier.",
    )
    search.add_argument("--study", help="study file (TOML); default studies/default.toml with a GPU, studies/cpu.toml without")
    search.add_argument("--trials", type=positive_int, help="finished trials the study should hold (default: the study file's)")
    search.add_argument(
        "--data",
        action="append",
        help="synthetic | bloodmnist[:SIZE] | PATH.npz | image folder | auto (default: the study file's [data] "
        "source); give it once per lab to search on several labs, each a domain ('A + B' also works)",
    )
    search.add_argument("--name", help="study name (default: the study file's name)")
    search.add_argument(
        "--storage", default=DEFAULT_STORAGE, help=f"Optuna storage URL (default {DEFAULT_STORAGE}; journal:FILE for a journal file)"
    )
    search.add_argument("--seed", type=int, help="seed of the split, the sampler and every trial (default: the study file's)")
    search.add_argument("--timeout", type=float, help="stop starting new trials after this many seconds")
    search.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes running trials (default 1; 0 runs trials in this process, without isolation)",
    )
    search.add_argument("--gpus", help="comma-separated GPU ids; worker i is pinned to GPU i modulo their number")
    search.add_argument("--max-failures", type=int, help="stop after this many failed trials in a row (default: the study file's)")
    search.add_argument(
        "--worker-memory-gb",
        type=float,
        default=0.0,
        help="stop a worker whose resident memory passes this many GiB, failing its trial (default: no limit)",
    )
    search.add_argument("--work-dir", default=".bcauto", help="feature cache, prepared data and worker files (default .bcauto)")
    search.add_argument(
        "--on-bad-image", choices=("stop", "skip"), default="stop", help="an undecodable image file stops the run (default) or is skipped"
    )
    search.set_defaults(func=cmd_search)

    best = sub.add_parser(
        "best",
        parents=[study_name, storage],
        help="the leaderboard and the best trial: number, value, params, MLflow run id",
        description="Show a study's leaderboard and best trial. The table has a column per parameter "
        "that differs between trials when they fit the terminal's width, else one "
        "name=value column; parameters equal in all trials are named once under it.",
    )
    best.add_argument("--top", type=positive_int, default=10, help="trials in the leaderboard (default 10)")
    best.add_argument("--json", action="store_true", help="print JSON: the best trial and the leaderboard, every parameter in full")
    best.set_defaults(func=cmd_best)

    plugins = sub.add_parser(
        "plugins",
        help="list registered components and the plugins providing them",
        description="List every component (backbone, augmentation, imbalance, dataset, shift, canonicalizer) "
        "with its package: a table in a terminal, one line per component otherwise.",
    )
    plugins.add_argument("--json", action="store_true", help="print JSON")
    plugins.set_defaults(func=cmd_plugins)

    ui = sub.add_parser(
        "ui",
        parents=[storage, tracking],
        help="open the MLflow UI on the study's tracking store",
        description="Serve the MLflow UI (and optuna-dashboard if installed).",
    )
    ui.add_argument("--name", help="study to show")
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; the UI has no login)")
    ui.add_argument("--port", type=int, default=5000, help="MLflow UI port (default 5000)")
    ui.set_defaults(func=cmd_ui)

    from bcauto.scaffold import KINDS

    new = sub.add_parser(
        "new-plugin",
        help="create a plugin package: one working component, entry point and tests",
        description="Write a ready-to-install plugin package for one component of KIND, with a test that passes.",
    )
    new.add_argument("kind", metavar="KIND", choices=list(KINDS), help=f"one of: {', '.join(KINDS)}")
    new.add_argument("name", metavar="NAME", help="component name: lower-case letters, digits and underscores (tiny_net)")
    new.add_argument("--dir", default=".", help="folder to create the package folder bcauto-NAME in (default: the current folder)")
    new.set_defaults(func=cmd_new_plugin)

    refit = sub.add_parser(
        "refit",
        parents=[study_name, storage, tracking],
        help="retrain the best trial (or the top K as an ensemble) on all the study's data and register it",
        description="Train the best configuration of a study again on its training and validation data together, "
        "for the epochs the trial settled on; save a model directory (model.keras, bcauto-model.json), "
        "log it to MLflow (tag bcauto.role = refit) and register it as bcauto-STUDY.",
    )
    refit.add_argument(
        "--top",
        type=int,
        default=1,
        help="refit the K best trials and average their probabilities in one model (default 1); for metric "
        "'both', the Pareto front ranked by the shifted score",
    )
    refit.add_argument(
        "--data",
        help="where to read the study's data (default: the source the study logged); it must hold the same images (same fingerprint)",
    )
    refit.add_argument("--study", help="study file (default: the one the search ran with)")
    refit.add_argument(
        "--epochs",
        type=refit_epochs,
        metavar="{best,trained,N}",
        help="best: each phase up to the epoch whose weights the trial kept, learning rates as in the trial; "
        "trained: every epoch the trial trained, constant learning rate; N: N epochs in all, shared between the "
        "phases as the trial kept them, the learning rate falling along a half cosine from the trial's (for a "
        "search that trained each trial briefly). Default: the study file's [train] refit_epochs, else best",
    )
    refit.add_argument(
        "--image-size",
        type=positive_int,
        metavar="S",
        help="train at S x S pixels rather than the size the study searched at (the same images, read again at S): "
        "search small and fast, train the chosen configuration on more detail. Default: the study file's [train] "
        "refit_image_size, else the searched size",
    )
    refit.add_argument(
        "--out",
        help="model directory to write (default models/STUDY); until it is written, every epoch is backed up in "
        "OUT.partial, and the same command run again after an interruption goes on from there",
    )
    refit.set_defaults(func=cmd_refit)

    evaluate = sub.add_parser(
        "evaluate",
        help="score a saved model on labelled data (per class, confusion matrix, corruptions, TTA)",
        description="Accuracy, macro precision/recall/F1 and per-class scores of a model directory on "
        "labelled data. Classes are matched by name; a set with some of the model's classes is "
        "averaged over the classes it has.",
    )
    evaluate.add_argument("model", metavar="MODEL", help="model directory written by `bcauto refit`")
    evaluate.add_argument("--data", required=True, help="bloodmnist[:SIZE] | PATH.npz | image folder | synthetic[:N]")
    evaluate.add_argument("--shift", action="store_true", help="also score every registered corruption at every severity")
    evaluate.add_argument(
        "--tta",
        action="store_true",
        help="average the probabilities over the 8 dihedral views (4 quarter-turn rotations, each also mirrored)",
    )
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the corruptions, of --adapt-im and of generated data (default 0)")
    evaluate.add_argument(
        "--adapt-bn",
        action="store_true",
        help="first recompute every BatchNorm layer's statistics on the evaluation images (labels unread; "
        "test-time adaptation to another lab)",
    )
    evaluate.add_argument("--adapt-im", action="store_true", help=ADAPT_IM_HELP)
    evaluate.add_argument("--classes", metavar="NAMES", help=CLASSES_HELP)
    evaluate.add_argument("--json", action="store_true", help="print the result as JSON")
    evaluate.add_argument("--out", default="evaluation", help="folder for evaluation.json and confusion_matrix.png (default evaluation)")
    evaluate.set_defaults(func=cmd_evaluate)

    predict = sub.add_parser(
        "predict",
        help="class probabilities of a saved model for images, as CSV",
        description="Predict the class of every image in INPUT (image files, folders searched recursively, "
        ".npz files) and write path, index, predicted class and one probability per class.",
    )
    predict.add_argument("model", metavar="MODEL", help="model directory written by `bcauto refit`")
    predict.add_argument("inputs", metavar="INPUT", nargs="+", help="image file, folder of images, or .npz file (an 'images' array)")
    predict.add_argument("--out", default="preds.csv", help="CSV file to write (default preds.csv)")
    predict.add_argument("--tta", action="store_true", help="average the probabilities over the 8 dihedral views")
    predict.add_argument(
        "--on-bad-image",
        choices=("stop", "skip"),
        default="stop",
        help="an undecodable image file stops the run (default) or is left out and listed",
    )
    predict.add_argument(
        "--adapt-bn",
        action="store_true",
        help="first recompute every BatchNorm layer's statistics on all the input images (test-time "
        "adaptation to another lab; the images are all decoded before predicting)",
    )
    predict.add_argument("--adapt-im", action="store_true", help=ADAPT_IM_HELP + " (all the input images are decoded first)")
    predict.add_argument("--seed", type=int, default=0, help="seed of --adapt-im's shuffling (default 0)")
    predict.add_argument("--classes", metavar="NAMES", help=CLASSES_HELP)
    predict.set_defaults(func=cmd_predict)

    from bcauto.few_shot import DEFAULT_LEARNING_RATE, EPOCH_CHOICES
    from bcauto.shot_choice import SHOT_CHOICES

    adapt = sub.add_parser(
        "adapt",
        parents=[tracking],
        help="fine-tune a saved model on a few labelled images of another lab, scored before and after",
        description="Fine-tune a model directory on a few labelled images (shots) of a new lab: the shots are "
        "drawn with a seeded RNG (or, with --choose-shots typical, chosen from the images alone), "
        "the rest of the data scores the model before and after; "
        "BatchNorm layers stay frozen, the model's augmentation acts, and the number of epochs is chosen by "
        "cross-validation within the shots unless --epochs gives it. Writes a new model "
        "directory recording its parent, the data and the shots, and logs an MLflow run "
        "(tag bcauto.role = adapt).",
    )
    adapt.add_argument("model", metavar="MODEL", help="model directory written by `bcauto refit` (or `bcauto adapt`)")
    adapt.add_argument(
        "--data",
        required=True,
        help="the new lab's labelled images: PATH.npz | image folder | ... (classes matched to the model's by name)",
    )
    adapt.add_argument(
        "--shots",
        type=int,
        help="images of --data to fine-tune on, in all (stratified, one per class first), or per class with --per-class; "
        "the rest score the model (needed unless --pool is given)",
    )
    adapt.add_argument(
        "--pool",
        metavar="INPUT",
        action="append",
        help="the lab's unlabelled images (file, folder searched recursively, or .npz; may be repeated): every image of "
        "--data is then a shot, and the label-free step and --pseudo-labels read the pool; nothing is scored "
        "(see `bcauto suggest`)",
    )
    adapt.add_argument("--per-class", action="store_true", help="--shots images of every class in the data")
    adapt.add_argument(
        "--choose-shots",
        choices=tuple(SHOT_CHOICES),
        default="random",
        help="random (the default): drawn with --seed, stratified by class; typical: from the images alone, the most "
        "typical image of each of --shots clusters of the model's features, after --adapt-im/--adapt-bn (TypiClust), "
        "so a lab can label just those",
    )
    adapt.add_argument("--seed", type=int, default=0, help="seed of the choice of shots and of the fine-tuning (default 0)")
    adapt.add_argument(
        "--epochs",
        type=epochs_or_auto,
        default=None,
        metavar="N|auto",
        help=f"fine-tuning epochs, or auto (the default): chosen among {', '.join(map(str, EPOCH_CHOICES))} by "
        "cross-validation within the shots",
    )
    adapt.add_argument(
        "--lr",
        type=float,
        default=DEFAULT_LEARNING_RATE,
        help=f"learning rate the fine-tuning starts at, Adam, falling to zero along a cosine (default {DEFAULT_LEARNING_RATE:g})",
    )
    adapt.add_argument(
        "--adapt-bn",
        action="store_true",
        help="first recompute the BatchNorm statistics on all the data's (and --pool's) images, labels unread",
    )
    adapt.add_argument(
        "--adapt-im",
        action="store_true",
        help="first adapt to all the data's (and --pool's) images, labels unread, as `bcauto evaluate --adapt-im` does (BatchNorm "
        "statistics, then information maximization among --classes when given); implies --adapt-bn",
    )
    adapt.add_argument(
        "--pseudo-labels",
        action="store_true",
        help="self-training: after fine-tuning on the shots, the model labels the data's other images, or the pool's "
        "(labels unread), "
        "and the most confident half of each predicted class join the shots for a second fine-tuning, started "
        "again from the same weights",
    )
    adapt.add_argument(
        "--align-to-shots",
        action="store_true",
        help="with --pseudo-labels: first align the predictions to the class mix of the shots (drawn stratified, "
        "so not with --per-class), for a lab whose mix differs from the training lab's and a model that "
        "under-predicts one of its classes",
    )
    adapt.add_argument(
        "--classes",
        metavar="NAMES",
        help="make the adapted model a classifier of these of the model's classes only, comma-separated (the ones "
        "the new lab's slides can show; they must include every class of --data); default: all of them",
    )
    adapt.add_argument(
        "--tta",
        action="store_true",
        help="score before and after, and choose --pseudo-labels, on the mean of the 8 dihedral views of each image "
        "(eight times the prediction time); predict with --tta to get the scores it reports",
    )
    adapt.add_argument(
        "--ensemble",
        type=positive_int,
        default=1,
        metavar="N",
        help="fine-tune N times from the same start (seeds --seed, --seed + 1, ...; with --pseudo-labels each labels "
        "and trains again on its own) and save the mean of their predictions as one model: N times the fine-tuning "
        "and the prediction time (default 1)",
    )
    adapt.add_argument("--out", help="model directory to write (default MODEL-adapted)")
    adapt.set_defaults(func=cmd_adapt)

    suggest = sub.add_parser(
        "suggest",
        help="choose which of a new lab's unlabelled images to label for `bcauto adapt --pool`",
        description="Choose --shots of the images in INPUT for the lab to label, from the images alone: the most typical "
        "image of each of --shots k-means clusters of the model's features (TypiClust), after --adapt-im/--adapt-bn "
        "when given (the model is adapted in memory only). Copies them into the new folder --out, with "
        "suggested.csv naming the image each was copied from; sort them into one subfolder per class, then run "
        "`bcauto adapt MODEL --data OUT --pool INPUT`.",
    )
    suggest.add_argument("model", metavar="MODEL", help="model directory written by `bcauto refit` (or `bcauto adapt`)")
    suggest.add_argument("inputs", metavar="INPUT", nargs="+", help="image file, folder of images (searched recursively), or .npz file")
    suggest.add_argument("--shots", type=positive_int, required=True, help="how many images to label")
    suggest.add_argument("--out", required=True, help="new folder to copy the images to label into")
    suggest.add_argument("--seed", type=int, default=0, help="seed of the clustering and of --adapt-im (default 0)")
    suggest.add_argument("--adapt-bn", action="store_true", help="first recompute the BatchNorm statistics on all the images")
    suggest.add_argument("--adapt-im", action="store_true", help=ADAPT_IM_HELP)
    suggest.add_argument("--classes", metavar="NAMES", help=CLASSES_HELP)
    suggest.set_defaults(func=cmd_suggest)

    audit = sub.add_parser(
        "audit",
        help="find duplicates, near duplicates, label conflicts, blank/corrupt images and outliers",
        description="Audit a dataset: exact and near duplicates (re-encoded, brightened, shifted, cropped), "
        "copies filed under different classes, blank or corrupt images, and outliers (images that are "
        "not one cell on a smear background, such as cells pasted over a foreign picture). Writes "
        "report.json and a contact sheet per flagged kind into --out.",
    )
    audit.add_argument("--data", required=True, help="synthetic | bloodmnist[:SIZE] | PATH.npz | image folder | auto")
    audit.add_argument("--image-size", type=int, default=96, help="audit (and --write-clean) the images at this size (default 96)")
    audit.add_argument("--out", default="audit", help="folder for report.json and the contact sheets (default ./audit)")
    audit.add_argument("--json", action="store_true", help="print the JSON report instead of the tables")
    audit.add_argument("--write-clean", metavar="PATH", help="write an .npz (images, labels, class_names) without the flagged images")
    audit.add_argument("--seed", type=int, default=0, help="seed of the outlier detector's robust fit (default 0)")
    audit.add_argument(
        "--on-bad-image", choices=("stop", "skip"), default="stop", help="an undecodable image file stops the audit (default) or is skipped"
    )
    audit.set_defaults(func=cmd_audit)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # bare `bcauto`: the commands, not only "arguments are required"
        parser.print_help(sys.stderr)
        return 2
    if args.command != "ui":
        quiet_frameworks(tensorflow=args.command not in LIGHT_COMMANDS, optuna=LIGHT_COMMANDS.get(args.command, True))
    from rich.console import Console

    console = Console(stderr=False)
    try:
        with sigterm_as_ctrl_c():
            return args.func(args, console)
    except BcautoError as exc:
        Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        return 2
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM; whatever was written is whole (bcauto.files)
        Console(stderr=True).print(f"[yellow]interrupted:[/] bcauto {args.command} stopped", highlight=False)
        return 130


if __name__ == "__main__":
    sys.exit(main())
