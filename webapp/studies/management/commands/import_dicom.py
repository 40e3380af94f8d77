from collections import Counter
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from webapp.studies.importing import (
    ALREADY_PRESENT,
    REJECTED,
    STORED,
    ImportOutcome,
    expand_paths,
    import_sources,
    iter_path_sources,
)


class Command(BaseCommand):
    help = (
        "Import DICOM files, folders (recursively), zip archives and gzip files. Prints one line per "
        "file (stored, already present, or rejected: REASON) and a summary; exit status 1 if any file "
        "was rejected."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paths", nargs="+", help="files, folders, .zip archives or .gz files")
        parser.add_argument("--quiet", action="store_true", help="print only rejections and the summary")

    def handle(self, *args: Any, paths: list[str], quiet: bool, **options: Any) -> None:
        files = expand_paths(paths)
        counts: Counter[str] = Counter()
        # The bar counts input files (an archive is one); it draws only on a terminal.
        bar = tqdm(total=len(files), unit=" files", desc="Importing", disable=None, file=self.stderr._out)

        def report(outcome: ImportOutcome) -> None:
            counts[outcome.status] += 1
            if not quiet or outcome.rejected:
                bar.write(f"{outcome.source}: {outcome}", file=self.stdout._out)

        with bar:
            for path in files:
                import_sources(iter_path_sources([path]), on_outcome=report)
                bar.update(1)
        total = sum(counts.values())
        self.stdout.write(
            f"{total} files: {counts[STORED]} stored, {counts[ALREADY_PRESENT]} already present, "
            f"{counts[REJECTED]} rejected"
        )
        if counts[REJECTED]:
            raise CommandError(f"{counts[REJECTED]} of {total} files were rejected", returncode=1)
