"""The `convexp` command line: one short function per subcommand, no logic of its own.

User errors (ConvexpError, bad options) print one line and exit 2; `--debug` anywhere on the
command line shows the traceback instead. Ctrl-C and SIGTERM exit 130 after saving what is known.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer import TyperException

from convexp.errors import ConvexpError
from convexp.memory import keep_freed_memory

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Convolutional-network experiments on MNIST, with a hand-written unfold/fold convolution.",
)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config (default: configs/<command>.yaml).")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a config key: --set train.epochs=2 (repeatable).")]
DeviceOpt = Annotated[Optional[str], typer.Option(help="auto | cpu | cuda (overrides the config's device).")]
SeedOpt = Annotated[Optional[int], typer.Option(help="Random seed (overrides the config's seed).")]
OutOpt = Annotated[Path, typer.Option(help="Parent folder of run folders.")]
NameOpt = Annotated[Optional[str], typer.Option(help="Suffix for the run folder's name.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Plain lines instead of progress bars.")]
JobsOpt = Annotated[Optional[str], typer.Option(help="Child runs at once, each in its own worker process: N or auto "
                                                    "(default 1; with --executor ray, as many as Ray's resources allow).")]
ThreadsOpt = Annotated[int, typer.Option(help="CPU threads per child run (0: the cores divided among the jobs; 1 on Ray). "
                                              "A child's CPU numbers depend on it in the last bits.")]
ExecutorOpt = Annotated[str, typer.Option(help="local (worker processes here) or ray (Ray tasks: a cluster, or a local instance).")]
RayAddressOpt = Annotated[Optional[str], typer.Option(help="Ray cluster to join (default: RAY_ADDRESS, else start a local instance).")]


def options(config, set_, device, seed, out, name, quiet, jobs=None, threads=0, executor="local", ray_address=None):
    """The options every experiment command shares, as lifecycle.RunOptions."""
    from convexp.lifecycle import RunOptions

    return RunOptions(config, list(set_ or []), device, seed, out, name, quiet, jobs, threads, executor, ray_address)


# One command per experiment: lifecycle.start loads the experiment module's typed `Config` from
# configs/<command>.yaml and calls its `run(config, run, device, reporter)` inside lifecycle.open_run,
# which owns the run folder and its status.


@app.command("train-mnist")
def train_mnist(config: ConfigOpt = None, set_: SetOpt = None, device: DeviceOpt = None, seed: SeedOpt = None,
                out: OutOpt = Path("runs"), name: NameOpt = None, quiet: QuietOpt = False) -> None:
    """Train MNISTConvNet on MNIST (report question 7): curves, test accuracy, model."""
    from convexp.experiments import train_mnist as experiment
    from convexp.lifecycle import start

    start(experiment, options(config, set_, device, seed, out, name, quiet))


@app.command("sweep-batch")
def sweep_batch(config: ConfigOpt = None, set_: SetOpt = None, device: DeviceOpt = None, seed: SeedOpt = None,
                out: OutOpt = Path("runs"), name: NameOpt = None, quiet: QuietOpt = False, jobs: JobsOpt = None,
                threads: ThreadsOpt = 0, executor: ExecutorOpt = "local", ray_address: RayAddressOpt = None) -> None:
    """Train over batch sizes x seeds (question 8): summary.csv and mean ± std curves."""
    from convexp.experiments import sweep_batch as experiment
    from convexp.lifecycle import start

    start(experiment, options(config, set_, device, seed, out, name, quiet, jobs, threads, executor, ray_address))


@app.command("augment")
def augment(config: ConfigOpt = None, set_: SetOpt = None, device: DeviceOpt = None, seed: SeedOpt = None,
            out: OutOpt = Path("runs"), name: NameOpt = None, quiet: QuietOpt = False) -> None:
    """Train with per-sample augmentations (question 9): train/val/test curves, preview grid."""
    from convexp.experiments import augment as experiment
    from convexp.lifecycle import start

    start(experiment, options(config, set_, device, seed, out, name, quiet))


@app.command("varres-resize")
def varres_resize(config: ConfigOpt = None, set_: SetOpt = None, device: DeviceOpt = None, seed: SeedOpt = None,
                  out: OutOpt = Path("runs"), name: NameOpt = None, quiet: QuietOpt = False) -> None:
    """mnist-varres resized to 28x28 into MNISTConvNet (questions 12, 13, 17)."""
    from convexp.experiments import varres_resize as experiment
    from convexp.lifecycle import start

    start(experiment, options(config, set_, device, seed, out, name, quiet))


@app.command("varres-pool")
def varres_pool(config: ConfigOpt = None, set_: SetOpt = None, device: DeviceOpt = None, seed: SeedOpt = None,
                out: OutOpt = Path("runs"), name: NameOpt = None, quiet: QuietOpt = False, jobs: JobsOpt = None,
                threads: ThreadsOpt = 0, executor: ExecutorOpt = "local", ray_address: RayAddressOpt = None) -> None:
    """Global-pooling net on native varres resolutions, max vs mean (questions 11, 14-17)."""
    from convexp.experiments import varres_pool as experiment
    from convexp.lifecycle import start

    start(experiment, options(config, set_, device, seed, out, name, quiet, jobs, threads, executor, ray_address))


@app.command("bench")
def bench(config: ConfigOpt = None, set_: SetOpt = None, device: DeviceOpt = None, seed: SeedOpt = None,
          out: OutOpt = Path("runs"), name: NameOpt = None, quiet: QuietOpt = False) -> None:
    """Time hand-written vs native conv (layers, training step, GFLOP/s) and the training loop."""
    from convexp.experiments import bench as experiment
    from convexp.lifecycle import start

    start(experiment, options(config, set_, device, seed, out, name, quiet))


@app.command("count-params")
def count_params(
    config: ConfigOpt = None, set_: SetOpt = None,
    channels: Annotated[Optional[int], typer.Option(help="N of the variable-input net.")] = None,
    match: Annotated[bool, typer.Option("--match", help="Find the N closest to MNISTConvNet's parameter count.")] = False,
    out: OutOpt = Path("runs"), name: NameOpt = None, quiet: QuietOpt = False,
) -> None:
    """Parameters and output shape per layer (questions 10, 15); --match searches N."""
    import dataclasses

    from convexp.experiments import count_params as experiment
    from convexp.lifecycle import start

    def with_options(loaded):  # the options laid over the config as values
        changes = ({"channels": channels} if channels is not None else {}) | ({"match": True} if match else {})
        return dataclasses.replace(loaded, **changes)

    start(experiment, options(config, set_, None, None, out, name, quiet), with_options)


@app.command("make-varres")
def make_varres(
    mnist_root: Annotated[Path, typer.Option(help="Folder holding MNIST/raw (e.g. ../shared/data/mnist-mini).")],
    out: Annotated[Path, typer.Option(help="Where to write <out>/train and <out>/test.")],
    seed: Annotated[int, typer.Option(help="Seed for canvas sizes and offsets.")] = 0,
    center: Annotated[bool, typer.Option("--center", help="Paste digits in the centre, not at a random offset.")] = False,
    sizes: Annotated[str, typer.Option(help="Canvas sizes, comma-separated.")] = "32,48,64",
) -> None:
    """Build mnist-varres from MNIST: each 28x28 digit, unscaled, on a 32/48/64 px black canvas."""
    from convexp.experiments.make_varres import make

    make(mnist_root, out, seed, center, sizes)


@app.command()
def reproduce(
    config: ConfigOpt = None, set_: SetOpt = None, device: DeviceOpt = None,
    fast_dev_run: Annotated[bool, typer.Option("--fast-dev-run", help="One seed; each run trains one epoch of 5 batches and evaluates 5 batches: a pipeline check.")] = False,
    out: OutOpt = Path("runs"), name: NameOpt = None, quiet: QuietOpt = False, jobs: JobsOpt = None, threads: ThreadsOpt = 0,
    executor: ExecutorOpt = "local", ray_address: RayAddressOpt = None,
) -> None:
    """Run the whole study (every experiment, several seeds) into one parent run folder."""
    import dataclasses

    from convexp.experiments import reproduce as experiment
    from convexp.lifecycle import start

    def with_options(loaded):
        return dataclasses.replace(loaded, fast_dev_run=True) if fast_dev_run else loaded

    start(experiment, options(config, set_, device, None, out, name, quiet, jobs, threads, executor, ray_address),
          with_options)


@app.command()
def sweep(
    experiment: Annotated[str, typer.Argument(help="The experiment to sweep: train-mnist, augment, varres-resize or varres-pool.")],
    grid: Annotated[Optional[list[str]], typer.Option(help="KEY=\\[v1, v2]: a config key and its values (repeatable; the grid is their product). Keys that move together: KEY1,KEY2=\\[\\[a1, b1], \\[a2, b2]].")] = None,
    random: Annotated[int, typer.Option(help="Train N points drawn from the grid (0: every point).")] = 0,
    seeds: Annotated[Optional[str], typer.Option(help="Seeds per point, comma-separated (default: the experiment config's seeds, or its seed).")] = None,
    select: Annotated[str, typer.Option(help="Validation metric that chooses the point: best_val_accuracy, val_accuracy or val_loss.")] = "best_val_accuracy",
    config: ConfigOpt = None, set_: SetOpt = None, device: DeviceOpt = None, out: OutOpt = Path("runs"),
    name: NameOpt = None, quiet: QuietOpt = False, jobs: JobsOpt = None, threads: ThreadsOpt = 0,
    executor: ExecutorOpt = "local", ray_address: RayAddressOpt = None,
) -> None:
    """Any config keys of one experiment over a grid, seeds per point; chosen on validation, then only the best point is tested."""
    from convexp.experiments import sweep as sweep_experiment
    from convexp.lifecycle import launch
    from convexp.sweep_options import sweep_config

    run_options = options(config, set_, device, None, out, name, quiet, jobs, threads, executor, ray_address)
    launch(sweep_experiment, sweep_config(experiment, grid or [], random, seeds, select, run_options), run_options)


@app.command()
def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run folders (a reproduce folder stands for all its steps).")],
    out: Annotated[Optional[Path], typer.Option(help="Where report.html and report.md go (default: the run folder).")] = None,
) -> None:
    """Build report.html (self-contained) and report.md from run folders."""
    from convexp.report import write_report

    target = write_report(run_dirs, out)
    print(f"report: {target / 'report.html'} and {target / 'report.md'}")


@app.command("runs")
def list_runs(out: OutOpt = Path("runs")) -> None:
    """List run folders: name, command, status, key metric, start time."""
    from convexp.console import Reporter, print_table
    from convexp.listing import list_runs as rows_of

    rows = rows_of(out)
    print_table(Reporter().console, f"{len(rows)} run(s) under {out}", ["run", "command", "status", "key metric", "data (train/val/test)", "started"], rows)


@app.command()
def resume(
    run_dir: Annotated[Path, typer.Argument(help="The run folder to continue.")],
    quiet: QuietOpt = False, jobs: JobsOpt = None, threads: ThreadsOpt = 0, executor: ExecutorOpt = "local",
    ray_address: RayAddressOpt = None,
) -> None:
    """Continue an interrupted run from its last completed epoch (a study: its unfinished children)."""
    from convexp.lifecycle import resume as resume_run

    resume_run(run_dir, quiet, jobs, threads, executor, ray_address)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    keep_freed_memory()  # before any tensor exists: see convexp/memory.py
    try:
        # Outside standalone mode typer turns Ctrl-C into a returned exit code (130).
        code = app(args=args, prog_name="convexp", standalone_mode=False)
    except ConvexpError as exc:  # bad input: what is wrong and how to fix it
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except TyperException as exc:  # Typer's usage errors (unknown option, missing argument, ...)
        if debug:
            raise
        ctx = getattr(exc, "ctx", None)  # usage errors know their command: point at its --help
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        print(f"error: {exc.format_message()}{hint}", file=sys.stderr)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        return 130
    return code if isinstance(code, int) else 0


def entry_point() -> None:
    sys.exit(main())
