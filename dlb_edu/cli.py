"""``python -m dlb_edu``: train one run, or compare methods (the baseline and DLB by default).

Bad values end the program with exit code 2 and one line on stderr, never a traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .errors import ConfigError, TrainingDiverged
from .augment import AUGMENTS
from .noise import NOISE_TYPES
from .train import FORWARD_MODES, METHODS, PRESETS, TrainConfig

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints usage too; we want one line
        raise ConfigError(message)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    # Defaults are None: a value given on the command line overrides the preset, anything else comes from it.
    p.add_argument("--preset", default="quick", help=f"one of {', '.join(PRESETS)} (default: quick)")
    p.add_argument("--dataset", default="cifar10-mini",
                   help="cifar10, cifar100, cifar10-mini (bundled, default), synthetic, or an image-folder path")
    p.add_argument("--arch", help="resnet32, resnet110, vgg16, wrn20_8, densenet40_12, small_cnn")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="B: fresh samples per step")
    p.add_argument("--lr", type=float)
    p.add_argument("--temperature", type=float, help="T of the consistency loss (paper: 3)")
    p.add_argument("--alpha", type=float, help="weight of the consistency loss (paper: 1)")
    p.add_argument("--forward", help=f"{' or '.join(FORWARD_MODES)} (default joint)")
    p.add_argument("--no-carry-over", action="store_true", help="start every epoch without a repeated half")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--fast", default="auto", help="auto (default: bf16, channels_last, fused SGD on CUDA) or off")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA)")
    p.add_argument("--train-subset", type=int, help="use only the first N training images")
    p.add_argument("--test-subset", type=int, help="use only the first N test images")
    p.add_argument("--checkpoint-every", type=int, help="also checkpoint every K steps")
    p.add_argument("--data-root", help="where data sets live (default: $DLB_EDU_DATA, else data/ in a checkout, "
                                       "else ~/.cache/dlb-edu)")
    p.add_argument("--download", action="store_true", help="download CIFAR-10/100 into the data root if missing")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--force", action="store_true", help="start over in an --out folder that holds another run")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    g = p.add_argument_group("other methods (defaults: their papers'; see dlb_edu/methods.py)")
    g.add_argument("--ls-epsilon", type=float, help="label_smoothing: eps (default 0.1)")
    g.add_argument("--tfkd-alpha", type=float, help="tf_kd: weight of the virtual-teacher KL (default 0.1)")
    g.add_argument("--tfkd-temperature", type=float, help="tf_kd: T softening the virtual teacher (default 20)")
    g.add_argument("--tfkd-correct-prob", type=float, help="tf_kd: virtual teacher's true-class probability (0.99)")
    g.add_argument("--cskd-temperature", type=float, help="cs_kd: T (default 4)")
    g.add_argument("--cskd-lambda", type=float, help="cs_kd: weight of the class-wise term (default 1)")
    g.add_argument("--pskd-alpha-T", dest="pskd_alpha_T", type=float, help="ps_kd: alpha at the last epoch (0.8)")
    g = p.add_argument_group("label noise and augmentation")
    g.add_argument("--label-noise", type=float, metavar="RATE",
                   help="corrupt this fraction of the training labels, in [0, 1) (default 0)")
    g.add_argument("--label-noise-type", help=f"{' or '.join(NOISE_TYPES)} (CIFAR-10's class flips; default symmetric)")
    g.add_argument("--augment", help=f"on top of crop + flip: {', '.join(AUGMENTS)} (default none)")
    g.add_argument("--cutout-size", type=int, help="Cutout's square side in pixels (default 16)")
    g.add_argument("--mix-alpha", type=float, help="mixup / CutMix: lam ~ Beta(a, a) (default 1)")
    g.add_argument("--cutmix-prob", type=float, help="probability that CutMix mixes a batch (default 0.5)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m dlb_edu", description="DLB: self-distillation from the last mini-batch")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p_train = sub.add_parser("train", help="train one run")
    p_train.add_argument("--method", default="dlb", help=f"one of {', '.join(METHODS)} (default dlb)")
    p_train.add_argument("--out", help="output folder (config.json, history.csv, summary.json, checkpoint.pt)")
    _add_run_options(p_train)
    p_cmp = sub.add_parser("compare", help="train several methods with the same seed and data")
    p_cmp.add_argument("--out", default="runs/compare", help="output folder (default runs/compare)")
    p_cmp.add_argument("--methods", default="baseline,dlb",
                       help=f"comma-separated, from {', '.join(METHODS)} (default baseline,dlb)")
    _add_run_options(p_cmp)
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    if args.preset not in PRESETS:
        raise ConfigError(f"unknown preset {args.preset!r}: choose one of {', '.join(PRESETS)}")
    overrides = {"dataset": args.dataset, "seed": args.seed, "device": args.device, "fast": args.fast,
                 "compile": args.compile,
                 "carry_over": not args.no_carry_over, "download": args.download, "data_root": args.data_root,
                 "method": getattr(args, "method", "dlb")}
    for name in ("arch", "epochs", "batch_size", "lr", "temperature", "alpha", "forward", "train_subset",
                 "test_subset", "checkpoint_every", "ls_epsilon", "tfkd_alpha", "tfkd_temperature",
                 "tfkd_correct_prob", "cskd_temperature", "cskd_lambda", "pskd_alpha_T", "label_noise",
                 "label_noise_type", "augment", "cutout_size", "mix_alpha", "cutmix_prob"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    return TrainConfig.from_preset(args.preset, **overrides).validate()


def parse_methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if not methods or unknown:
        raise ConfigError(f"--methods must be a comma-separated list from {', '.join(METHODS)}, got {text!r}")
    return methods


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


def run_train(args) -> None:
    from .train import Trainer
    config = config_from_args(args)
    trainer = Trainer(config, out_dir=args.out, resume=args.resume, force=args.force, progress=not args.no_progress)
    for row in trainer.epochs():
        if trainer.rank == 0:
            print(epoch_line(row, config.epochs), flush=True)
    s = trainer.summary()
    if trainer.rank == 0:
        print(f"{s['method']}: final test acc {s['final_test_acc']:.4f}, best {s['best_test_acc']:.4f}, "
              f"{s['train_time_s']:.1f} s on {s['device']}" + (f"; outputs in {args.out}" if args.out else ""))


def run_compare(args) -> None:
    from .train import rank_and_world_size, compare
    from .viz import plot_curves
    config = config_from_args(args)
    out = Path(args.out)

    def report(method, row):
        print(f"{method:<15} {epoch_line(row, config.epochs)}", flush=True)

    results = compare(config, parse_methods(args.methods), out, on_epoch=report, resume=args.resume,
                      force=args.force, progress=not args.no_progress)
    if rank_and_world_size()[0] != 0:
        return
    print()
    print(format_table({method: summary for method, (_, summary) in results.items()}))
    fig = plot_curves({method: history for method, (history, _) in results.items()},
                      title=f"{config.arch} on {config.dataset}, {config.epochs} epochs, seed {config.seed}")
    png = out / "curves.png"
    fig.savefig(png, dpi=120)
    print(f"curves saved to {png}")


def init_distributed() -> None:
    """Under ``torchrun`` (WORLD_SIZE > 1): join the process group, NCCL on GPUs, gloo on CPUs."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    import torch
    import torch.distributed as dist
    if dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        init_distributed()
        {"train": run_train, "compare": run_compare}[args.command](args)
    except ConfigError as e:
        print(f"dlb_edu: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except TrainingDiverged as e:
        print(f"dlb_edu: training stopped: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dlb_edu: interrupted; continue with --resume", file=sys.stderr)
        return 130
    finally:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0
