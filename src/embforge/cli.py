"""The ``embforge`` entry point: one subcommand per module in ``embforge.commands``.

Every subcommand's flags are generated from its Config dataclass, so ``--help``, YAML files and
the Python API agree on names and defaults. User errors print one line and exit 2; ``--debug``
shows the traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import sys
import types
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from . import __version__
from .config import add_arguments, config_from_args, did_you_mean
from .errors import EmbforgeError

if TYPE_CHECKING:  # pragma: no cover
    from _typeshed import DataclassInstance

# A command's first positional argument: CONFIG, an optional YAML config file (flags given win over it);
# a Config field's name, which that argument fills (``embforge data SOURCE``, ``embforge run PIPELINE``);
# or None, no positional argument.
CONFIG = "config"
# name -> (module, first positional argument)
COMMANDS: dict[str, tuple[str, str | None]] = {
    "encode": ("embforge.commands.encode", None),
    "data": ("embforge.commands.data", "source"),
    "mine": ("embforge.commands.mine", None),
    "score": ("embforge.commands.score", None),
    "eval": ("embforge.commands.eval", None),
    "train": ("embforge.commands.train", CONFIG),
    "csr": ("embforge.commands.csr", None),  # a group: embforge csr embed | train | encode
    "merge": ("embforge.commands.merge", None),
    "export": ("embforge.commands.export", None),
    "run": ("embforge.commands.run", "pipeline"),
}


def _load(name: str) -> types.ModuleType:
    return importlib.import_module(COMMANDS[name][0])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="embforge",
        description="Train, fine-tune, compress, evaluate and ship embedding models.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"embforge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, positional) in COMMANDS.items():
        module = _load(name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP, allow_abbrev=False)
        subcommands = getattr(module, "SUBCOMMANDS", None)
        if subcommands:  # a command group such as `embforge csr train`: one typed Config per subcommand
            p.set_defaults(group_parser=p)
            nested = p.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
            for sub_name, spec in subcommands.items():
                _add_command(nested.add_parser(sub_name, help=spec.help, description=spec.help, allow_abbrev=False),
                             spec.config, spec.positional)
            continue
        _add_command(p, module.Config, positional)
    return parser


def _add_command(p: argparse.ArgumentParser, config_cls: type[DataclassInstance], positional: str | None) -> None:
    p.set_defaults(cli_parser=p)  # the parser that names the flags a mistyped one is compared against
    if positional == CONFIG:
        p.add_argument(CONFIG, nargs="?", help="YAML config; flags given on the command line win.")
    elif positional:
        field = next(f for f in dataclasses.fields(config_cls) if f.name == positional)
        p.add_argument(positional, nargs="?", default=argparse.SUPPRESS, help=field.metadata.get("help"))
    p.add_argument("--debug", dest="cli_debug", action="store_true", default=False,
                   help="Show full tracebacks for errors.")
    # TrainingArguments has a `debug` field of its own; the CLI's --debug (tracebacks) wins.
    skip = ("debug",) + ((positional,) if positional and positional != CONFIG else ())
    add_arguments(p, config_cls, skip=skip)


# The run function takes the Config class paired with it; that pairing is made at run time (per command
# module), so the run function is typed by what it accepts in general.
Resolved = tuple[str, "type[DataclassInstance]", Callable[[Any], object]]


def _resolve(module: types.ModuleType, args: argparse.Namespace) -> Resolved | None:
    """(name for messages, Config class, run function) of the command or group subcommand given."""
    subcommands = getattr(module, "SUBCOMMANDS", None)
    if not subcommands:
        return args.command, module.Config, module.run
    if not getattr(args, "subcommand", None):
        return None
    spec = subcommands[args.subcommand]
    return f"{args.command} {args.subcommand}", spec.config, spec.run


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        _refuse_unknown(getattr(args, "cli_parser", parser), unknown)
    if not args.command:
        parser.print_help()
        return 0
    module = _load(args.command)
    resolved = _resolve(module, args)
    if resolved is None:
        args.group_parser.print_help(sys.stderr)
        return 2
    name, config_cls, run = resolved
    debug = args.cli_debug
    try:
        _quiet_libraries()
        cfg = config_from_args(config_cls, args, getattr(args, "config", None))
        run(cfg)
    except EmbforgeError as exc:
        if debug:
            raise
        print(f"embforge {name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"embforge {args.command}: interrupted", file=sys.stderr)
        return 130
    _leave_process_group()
    if argv is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        _exit_now(0)
    return 0


def _exit_now(code: int) -> None:
    """End a finished rank without the interpreter's shutdown. Even after the process group is destroyed,
    gloo's threads still abort a rank now and then while C++ statics are torn down ("terminate called
    without an active exception", pytorch/pytorch#190489: 2 of ~40 runs here), and torchrun then reports
    a run that succeeded as failed. Every output is already written and closed (atomically) by now."""
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _leave_process_group() -> None:
    """Under torchrun, leave the process group before the interpreter shuts down: gloo's worker threads
    otherwise abort a finished rank now and then ("terminate called without an active exception",
    pytorch/pytorch#190489), and the launcher reports a run that succeeded as failed."""
    if "torch" in sys.modules:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def _refuse_unknown(parser: argparse.ArgumentParser, unknown: list[str]) -> None:
    """argparse's own message lists unknown flags bare; name the nearest real flag of the command."""
    flags = [s for action in parser._actions for s in action.option_strings if s.startswith("--")]
    hint = next((did_you_mean(a.split("=", 1)[0], flags) for a in unknown if a.startswith("--")), "")
    # No usage block: train's runs to 150 lines and would push the one line that matters off the screen.
    parser.exit(2, f"{parser.prog}: error: unrecognized arguments: {' '.join(unknown)}{hint}; "
                   f"see {parser.prog} --help\n")


def _quiet_libraries() -> None:
    """Keep the user's terminal for embforge's own progress bars and results."""
    import warnings

    warnings.filterwarnings("ignore", message=".*TRANSFORMERS_CACHE.*")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
