"""``python -m dlb_edu``: train one run, or compare methods (the baseline and DLB by default).

Every field of :class:`~dlb_edu.config.TrainConfig` is an option (``batch_size`` is ``--batch-size``, a boolean
``carry_over`` is ``--carry-over`` / ``--no-carry-over``), generated from the fields with their help text, so a new
field cannot be forgotten here. An option not given takes the preset's value (``--preset quick`` by default), else
the field's default. Bad values end the program with exit code 2 and one line on stderr, never a traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import typing
from pathlib import Path

from . import distributed
from .config import METHODS, PRESETS, TrainConfig
from .errors import ConfigError, TrainingDiverged

EXIT_BAD_INPUT = 2
NOT_ON_THE_COMMAND_LINE = ("method",)  # `train --method` is added by hand; `compare` has --methods instead


# What argparse must take for a negative number rather than an option: its own rule knows only -1 and -0.5, so
# `--weight-decay -1e-4` would be "expected one argument". Scientific notation, inf and nan too (the range checks
# then say what is wrong with them).
NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^-(inf|infinity|nan)$", re.IGNORECASE)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = NEGATIVE_NUMBER

    def error(self, message):  # argparse prints usage too; we want one line
        raise ConfigError(message)


def flag(name: str) -> str:
    """The option of a config field: ``batch_size`` -> ``--batch-size`` (``pskd_alpha_T`` keeps its capital)."""
    return "--" + name.replace("_", "-")


def _add_config_options(p: argparse.ArgumentParser) -> None:
    """One option per TrainConfig field, typed from the field, with its help text and the quick preset's default."""
    hints = typing.get_type_hints(TrainConfig)
    quick = TrainConfig.from_preset("quick")
    groups = {"run": p.add_argument_group("the run (TrainConfig; defaults: --preset quick)")}
    for f in dataclasses.fields(TrainConfig):
        if f.name in NOT_ON_THE_COMMAND_LINE:
            continue
        if f.name == "ls_epsilon":
            groups["run"] = p.add_argument_group("other methods, label noise, augmentation (see dlb_edu/methods.py)")
        kind = _base_type(hints[f.name])
        default = getattr(quick, f.name)
        choices = f.metadata["choices"]
        help_text = f.metadata["help"] + (f" (default {default})" if kind is not bool else
                                          f" (default {'on' if default else 'off'})")
        kwargs = dict(dest=f.name, default=None, help=help_text.replace("%", "%%"))
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif kind is tuple:
            kwargs.update(nargs="*", type=float, metavar="FRACTION")
        else:
            kwargs["type"] = kind
            if choices is not None:
                kwargs["metavar"] = "{" + ",".join(choices) + "}"
        groups["run"].add_argument(flag(f.name), **kwargs)


def _base_type(hint):
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is tuple:
        return tuple
    return args[0] if args else hint


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="quick", help=f"one of {', '.join(PRESETS)} (default: quick)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--force", action="store_true", help="start over in an --out folder that holds another run "
                                                        "(its files are replaced at the new run's first checkpoint)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (they show only on a terminal)")
    _add_config_options(p)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m dlb_edu", description="DLB: self-distillation from the last mini-batch")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p_train = sub.add_parser("train", help="train one run")
    method = next(f for f in dataclasses.fields(TrainConfig) if f.name == "method")
    p_train.add_argument("--method", default=method.default, metavar="{" + ",".join(METHODS) + "}",
                         help=f"{method.metadata['help']} (default {method.default})")
    p_train.add_argument("--out", help="output folder (config.json, history.csv, summary.json, checkpoint.pt)")
    _add_run_options(p_train)
    p_cmp = sub.add_parser("compare", help="train several methods with the same seed and data")
    p_cmp.add_argument("--out", default="runs/compare", help="output folder (default runs/compare)")
    p_cmp.add_argument("--methods", default="baseline,dlb",
                       help=f"comma-separated, from {', '.join(METHODS)} (default baseline,dlb)")
    _add_run_options(p_cmp)
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The options given on the command line over the preset's values over the fields' defaults."""
    if args.preset not in PRESETS:
        raise ConfigError(f"unknown preset {args.preset!r}: choose one of {', '.join(PRESETS)}")
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
                 if getattr(args, f.name, None) is not None}
    overrides["method"] = getattr(args, "method", "dlb")
    return TrainConfig.from_preset(args.preset, **overrides)


def parse_methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if not methods or unknown:
        raise ConfigError(f"--methods must be a comma-separated list from {', '.join(METHODS)}, got {text!r}")
    return methods  # a method named twice is refused by train.compare


def format_table(summaries: dict[str, dict]) -> str:
    width = max([10] + [len(m) for m in summaries])
    head = f"{'method':<{width}} {'final acc':>9} {'best acc':>9} {'time (s)':>9}"
    lines = [head, "-" * len(head)]
    for method, s in summaries.items():
        lines.append(f"{method:<{width}} {s['final_test_acc']:>9.4f} {s['best_test_acc']:>9.4f} "
                     f"{s['train_time_s']:>9.1f}")
    return "\n".join(lines)


def epoch_line(row: dict, epochs: int) -> str:
    return (f"epoch {row['epoch']:>3}/{epochs}  loss {row['train_loss']:.4f}  test acc {row['test_acc']:.4f}  "
            f"({row['epoch_time_s']:.1f} s)")


def _progress(args) -> bool:
    # Bars only on a terminal: in a log file their frames would glue to the next line (an error, say).
    return not args.no_progress and sys.stderr.isatty()


def run_train(args) -> None:
    from .train import Trainer
    config = config_from_args(args)
    trainer = Trainer(config, out_dir=args.out, resume=args.resume, force=args.force, progress=_progress(args))
    for row in trainer.epochs():
        if trainer.rank == 0:
            print(epoch_line(row, config.epochs), flush=True)
    s = trainer.summary()
    if trainer.rank == 0:
        print(f"{s['method']}: final test acc {s['final_test_acc']:.4f}, best {s['best_test_acc']:.4f}, "
              f"{s['train_time_s']:.1f} s on {s['device']}" + (f"; outputs in {args.out}" if args.out else ""))


def run_compare(args) -> None:
    from matplotlib.figure import Figure  # drawn without pyplot: no backend is chosen or changed

    from .train import compare
    from .viz import plot_curves
    config = config_from_args(args)
    methods = parse_methods(args.methods)
    if not args.out.strip():
        raise ConfigError(f"--out must name a folder, got {args.out!r}")
    out = Path(args.out)

    def report(method, row):
        print(f"{method:<15} {epoch_line(row, config.epochs)}", flush=True)

    results = compare(config, methods, out, on_epoch=report, resume=args.resume, force=args.force,
                      progress=_progress(args))
    if distributed.rank_and_world_size()[0] != 0:
        return
    print()
    print(format_table({method: summary for method, (_, summary) in results.items()}))
    fig = plot_curves({method: history for method, (history, _) in results.items()},
                      title=f"{config.arch} on {config.dataset}, {config.epochs} epochs, seed {config.seed}",
                      fig=Figure(figsize=(16, 3.4)))
    png = out / "curves.png"
    fig.savefig(png, dpi=120)
    print(f"curves saved to {png}")


def one_line(message: str) -> str:
    """A message as one line: a newline in it (a path can hold one) is shown escaped."""
    return message.replace("\r", "\\r").replace("\n", "\\n")


def main(argv=None) -> int:
    clean = False
    try:
        args = build_parser().parse_args(argv)
        distributed.init_distributed()
        {"train": run_train, "compare": run_compare}[args.command](args)
        clean = True
    except ConfigError as e:
        print(f"dlb_edu: error: {one_line(str(e))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except TrainingDiverged as e:
        print(f"dlb_edu: training stopped: {one_line(str(e))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dlb_edu: interrupted; continue with --resume", file=sys.stderr)
        return 130
    finally:
        distributed.shutdown(clean)  # the training objects are gone: the process group ends here, deterministically
    return 0
