"""``python -m inference``: download, import and list models.

    python -m inference download nnInteractive_v1.0 [--accept-license] [--dest DIR] [--replace]
    python -m inference import PATH [--name NAME] [--replace]
    python -m inference list

Models go to the models directory (``$ANNOVOX_MODELS_DIR``, by default ``~/.local/share/annovox/models``).
"""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from inference.errors import EngineError
from inference.model_folder import ModelInfo
from inference.registry import DOWNLOADABLE, Downloadable, download, list_models, models_dir, register


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference", description="Manage Annovox engine models.")
    commands = parser.add_subparsers(dest="command", required=True)

    fetch = commands.add_parser("download", help="download an official model from Hugging Face")
    fetch.add_argument("model", choices=sorted(DOWNLOADABLE))
    fetch.add_argument(
        "--accept-license", action="store_true", help="accept the model's licence without asking"
    )
    fetch.add_argument(
        "--dest",
        type=Path,
        help="models directory to install into (default: $ANNOVOX_MODELS_DIR or its default)",
    )
    fetch.add_argument(
        "--from-dir",
        type=Path,
        metavar="MIRROR",
        help="copy from a local copy of the Hugging Face repository instead of downloading",
    )
    fetch.add_argument("--replace", action="store_true", help="replace a model of the same name")

    add = commands.add_parser("import", help="register a model folder copied by hand")
    add.add_argument("path", type=Path)
    add.add_argument("--name", help="name to register it under (default: the folder's name)")
    add.add_argument("--replace", action="store_true", help="replace a model of the same name")

    commands.add_parser("list", help="list the registered models")

    args = parser.parse_args(argv)
    try:
        if args.command == "download":
            return _download(args.model, args.accept_license, args.dest, args.from_dir, args.replace)
        if args.command == "import":
            _report("registered", register(args.path, args.name, replace=args.replace))
            return 0
        return _list()
    except EngineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def _download(model: str, accepted: bool, dest: Path | None, mirror: Path | None, replace: bool) -> int:
    spec = DOWNLOADABLE[model]
    print(_licence_notice(model, spec))
    if not accepted:
        if not sys.stdin.isatty():
            print(
                "error: the licence was not accepted; pass --accept-license to accept it non-interactively",
                file=sys.stderr,
            )
            return 1
        answer = input(f"Do you accept the {spec.license} licence for {model}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("Licence not accepted; nothing downloaded.", file=sys.stderr)
            return 1
    source = f"a local copy in {mirror}" if mirror else f"Hugging Face ({spec.repo_id})"
    print(f"Fetching {spec.folder} from {source} ...", flush=True)
    _report("downloaded", download(model, replace=replace, root=dest, mirror=mirror))
    return 0


def _licence_notice(model: str, spec: Downloadable) -> str:
    return (
        f"{model} is licensed {spec.license} ({spec.license_url}).\n"
        "You may use, share and adapt it for non-commercial purposes only, giving appropriate credit\n"
        "(Isensee et al., 2025, nnInteractive, arXiv 2503.08373) and sharing adaptations under the same\n"
        "licence. Annovox shows the licence of the model it runs."
    )


def _report(verb: str, info: ModelInfo) -> None:
    print(f"{verb} {info.name} (version {info.version}, licence {info.license}) at {info.path}")


def _list() -> int:
    models = list_models()
    if not models:
        print(f"no models in {models_dir()}")
        return 0
    rows = [("NAME", "VERSION", "LICENCE", "PATH")]
    for model in models:
        if model.info is None:
            rows.append((model.name, "-", "-", f"{model.path}  (broken: {model.error})"))
        else:
            rows.append((model.name, model.info.version, model.info.license, str(model.path)))
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[3])
    return 0
