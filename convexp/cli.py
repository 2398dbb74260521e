"""The `convexp` command line: a command per experiment, registered from its spec, and the
commands that are not experiments (make-varres, sweep, report, runs, resume); no logic of its own.

User errors (ConvexpError, bad options) print one line and exit 2; `--debug` anywhere on the
command line shows the traceback instead. Ctrl-C and SIGTERM exit 130 after saving what is known.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer import TyperException

from convexp import completion
from convexp.errors import ConvexpError
from convexp.experiments import spec, specs
from convexp.experiments.sweep_points import ASK_ABOVE_RUNS
from convexp.memory import keep_freed_memory
from convexp.search import TPE_STARTUP_TRIALS
from convexp.spec import Experiment, Flag

app = typer.Typer(
    add_completion=True,  # --install-completion, --show-completion: convexp/completion.py says what completes
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Convolutional-network experiments on MNIST, with a hand-written unfold/fold convolution.",
)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config (default: configs/<command>.yaml).",
                                                   autocompletion=completion.config_files)]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a config key: --set train.epochs=2 (repeatable).",
                                                     autocompletion=completion.config_keys)]
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


def before_computing() -> None:
    """What a command that trains sets first, before any tensor operation starts PyTorch's
    threads, which inherit it: denormals flushed to zero (convexp/precision.py)."""
    from convexp.precision import flush_denormals

    flush_denormals()


def run_options(values: dict):
    """The options every experiment command shares, as application.RunOptions."""
    from convexp.application import RunOptions

    return RunOptions(values["config"], list(values["set_"] or []), values.get("device"), values.get("seed"),
                      values["out"], values["name"], values["quiet"], values.get("jobs"), values.get("threads", 0),
                      values.get("executor", "local"), values.get("ray_address"))


def flag_parameter(flag: Flag) -> inspect.Parameter:
    """An experiment's own flag (count-params --match, reproduce --fast-dev-run) as a Typer option."""
    option = typer.Option(flag.name, help=flag.help)
    annotation = Annotated[bool, option] if flag.type is bool else Annotated[Optional[flag.type], option]
    return parameter(flag.name.lstrip("-").replace("-", "_"), annotation, False if flag.type is bool else None)


def given(flag: Flag, value) -> bool:
    """A switch counts when on; an option with a value when typed (0 is a value, and checked)."""
    return value is True if flag.type is bool else value is not None


def parameter(name: str, annotation, default) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def experiment_command(experiment: Experiment):
    """The command of one experiment, from its spec: --config and --set, --device and --seed where
    the spec takes them, its own flags, --out, --name and --quiet, and a study's --jobs,
    --threads, --executor and --ray-address. It starts the experiment (application.start), its
    flags laid over the loaded config as `{key: value}` changes."""
    parameters = [parameter("config", ConfigOpt, None), parameter("set_", SetOpt, None)]
    if experiment.device_option:
        parameters.append(parameter("device", DeviceOpt, None))
    if experiment.seed_option:
        parameters.append(parameter("seed", SeedOpt, None))
    flags = {flag_parameter(flag).name: flag for flag in experiment.flags}
    parameters += [flag_parameter(flag) for flag in experiment.flags]
    parameters += [parameter("out", OutOpt, Path("runs")), parameter("name", NameOpt, None), parameter("quiet", QuietOpt, False)]
    if experiment.study:
        parameters += [parameter("jobs", JobsOpt, None), parameter("threads", ThreadsOpt, 0),
                       parameter("executor", ExecutorOpt, "local"), parameter("ray_address", RayAddressOpt, None)]

    def command(**values) -> None:
        from convexp.application import start

        before_computing()
        changes = {flag.key: values[name] for name, flag in flags.items() if given(flag, values[name])}
        start(experiment, run_options(values), changes)

    command.__signature__ = inspect.Signature(parameters)
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    command.__doc__ = experiment.help
    command.__name__ = experiment.name.replace("-", "_")
    return command


def show_version(value: bool) -> None:
    """convexp's version, torch's, and the CUDA device when there is one."""
    if not value:
        return
    from importlib.metadata import version

    import torch

    device = f"CUDA: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no CUDA device"
    print(f"convexp {version('convexp')}, torch {torch.__version__}, {device}")
    raise typer.Exit()


@app.callback()
def options_of_convexp(
    version: Annotated[bool, typer.Option("--version", callback=show_version, is_eager=True,
                                          help="Show convexp's and torch's versions and the CUDA device, and exit.")] = False,
) -> None:
    """Convolutional-network experiments on MNIST, with a hand-written unfold/fold convolution."""


# One command per experiment, registered from its spec (convexp/experiments/<x>.py: SPEC), in
# the order of experiments.NAMES; the commands that are not experiments are written below.
for _experiment in specs():
    if _experiment.command:
        app.command(_experiment.name)(experiment_command(_experiment))


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
def sweep(
    experiment: Annotated[str, typer.Argument(help="The experiment to sweep: train-mnist, augment, varres-resize or varres-pool.",
                                              autocompletion=completion.sweepable)],
    grid: Annotated[Optional[list[str]], typer.Option(help="KEY=\\[v1, v2]: a config key and its values (repeatable; the grid is their product). Keys that move together: KEY1,KEY2=\\[\\[a1, b1], \\[a2, b2]].",
                                                      autocompletion=completion.config_keys)] = None,
    random: Annotated[int, typer.Option(help="Train N points drawn from the grid (0: every point).")] = 0,
    seeds: Annotated[Optional[str], typer.Option(help="Seeds per point, comma-separated (default: the experiment config's seeds, or its seed).")] = None,
    select: Annotated[str, typer.Option(help="Validation metric that chooses the point: best_val_accuracy, val_accuracy or val_loss.")] = "best_val_accuracy",
    space: Annotated[Optional[list[str]], typer.Option(help="KEY=RANGE to search: loguniform(LOW, HIGH), uniform(LOW, HIGH), int(LOW, HIGH) or choice(a, b, ...) (repeatable).",
                                                       autocompletion=completion.config_keys)] = None,
    sampler: Annotated[Optional[str], typer.Option(help="grid (every --grid point; the default without --space), random or tpe (Optuna; the default with --space).")] = None,
    trials: Annotated[int, typer.Option(help="Points a random or tpe search tries.")] = 0,
    pruner: Annotated[str, typer.Option(help="none, median or hyperband: stop a trial whose validation metric falls behind after an epoch (a search only).")] = "none",
    epoch_budget: Annotated[int, typer.Option(help="A search draws no new trial once its trials have trained this many epochs in all (0: --trials alone).")] = 0,
    startup_trials: Annotated[int, typer.Option(help="tpe: trials drawn at random before it models the ones so far (Optuna's n_startup_trials).")] = TPE_STARTUP_TRIALS,
    config: ConfigOpt = None, set_: SetOpt = None, device: DeviceOpt = None, out: OutOpt = Path("runs"),
    name: NameOpt = None, quiet: QuietOpt = False, jobs: JobsOpt = None, threads: ThreadsOpt = 0,
    executor: ExecutorOpt = "local", ray_address: RayAddressOpt = None,
    yes: Annotated[bool, typer.Option("--yes", help=f"Start a sweep of more than {ASK_ABOVE_RUNS} runs without asking.")] = False,
) -> None:
    """Any config keys of one experiment over a grid or searched ranges, seeds per point; chosen on validation, then only the best point is tested."""
    from convexp.application import launch
    from convexp.sweep_options import sweep_config

    before_computing()
    options = run_options(locals())
    launch(spec("sweep"), sweep_config(experiment, grid or [], random, seeds, select, options, space or [], sampler,
                                       trials, pruner, yes, epoch_budget, startup_trials), options)


@app.command()
def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run folders (a reproduce folder stands for all its steps).",
                                                   autocompletion=completion.run_folders)],
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


ChildOpt = Annotated[Optional[str], typer.Option("--child", help="In a study or sweep folder: which trained run (its name, as listed).")]


@app.command()
def predict(
    run_dir: Annotated[Path, typer.Argument(help="A trained run, or a study or sweep folder holding one.")],
    paths: Annotated[list[Path], typer.Argument(help="PNG or JPEG files, or folders of them (searched recursively).")],
    out: Annotated[Path, typer.Option(help="The CSV written: path, label, probability, p0..p9.")] = Path("predictions.csv"),
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Images of one size per forward pass.")] = 256,
    child: ChildOpt = None,
) -> None:
    """Classify image files of any size with a trained run's network: a table and predictions.csv."""
    from convexp.predict import predict as predict_images

    predict_images(run_dir, paths, out, device, batch_size, child)


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="A trained run, or a study or sweep folder holding one.")],
    format: Annotated[str, typer.Option("--format", help="onnx | torchscript.")] = "onnx",
    out: Annotated[Optional[Path], typer.Option(help="The file written (default: model.onnx / model.torchscript.pt beside model.pt).")] = None,
    child: ChildOpt = None,
) -> None:
    """Write a trained network as ONNX or TorchScript (pixels in [0, 1] -> logits), checked against PyTorch."""
    from convexp.export import export as export_model

    target, found = export_model(run_dir, format, out, child)
    checks = ", ".join(f"{shape}: {difference:.1e}" for shape, difference in found.items())
    print(f"{format}: {target} (largest absolute logit difference against PyTorch: {checks})")


@app.command()
def resume(
    run_dir: Annotated[Path, typer.Argument(help="The run folder to continue.", autocompletion=completion.run_folders)],
    quiet: QuietOpt = False, jobs: JobsOpt = None, threads: ThreadsOpt = 0, executor: ExecutorOpt = "local",
    ray_address: RayAddressOpt = None,
    trials: Annotated[int, typer.Option(help="A search: its trials in all, those it has included; more than it had searches on, also after it completed (0: as it was).")] = 0,
    epoch_budget: Annotated[int, typer.Option(help="A search: its new --epoch-budget in epochs (0: as it was; a budget cannot be removed).")] = 0,
    yes: Annotated[bool, typer.Option("--yes", help=f"A search given --trials: go on past {ASK_ABOVE_RUNS} runs without asking.")] = False,
) -> None:
    """Continue an interrupted run from its last completed epoch (a study: its unfinished children; a search: more trials with --trials)."""
    from convexp.application import resume as resume_run

    before_computing()
    resume_run(run_dir, quiet, jobs, threads, executor, ray_address, trials, epoch_budget, yes)


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
