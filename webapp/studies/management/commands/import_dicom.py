from collections import Counter

from django.core.management.base import BaseCommand
from tqdm import tqdm

from webapp.studies.importing import REJECTED, ImportOutcome, import_sources, iter_path_sources


class Command(BaseCommand):
    help = "Import DICOM files, folders (recursively) and zip archives. Exit status 1 if any file was rejected."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("paths", nargs="+", help="files, folders or .zip archives")
        parser.add_argument("--quiet", action="store_true", help="print only rejections and the summary")

    def handle(self, paths: list[str], quiet: bool, **options: object) -> None:
        counts: Counter[str] = Counter()
        bar = tqdm(unit=" files", desc="Importing", disable=None, file=self.stderr._out)

        def report(outcome: ImportOutcome) -> None:
            counts[outcome.status] += 1
            bar.update(1)
            if not quiet or outcome.rejected:
                bar.write(f"{outcome.source}: {outcome}", file=self.stdout._out)

        import_sources(iter_path_sources(paths), on_outcome=report)
        bar.close()
        self.stdout.write(
            f"{sum(counts.values())} files: {counts['stored']} stored, "
            f"{counts['already present']} already present, {counts[REJECTED]} rejected"
        )
        if counts[REJECTED]:
            raise SystemExit(1)
