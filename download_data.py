"""Get SynergyReID into DATA_DIR/data_reid: the official challenge data, or its synthetic twin.

    python download_data.py                                     # the 2023 toolkit data into data/data_reid
    python download_data.py --year 2022 --data-dir data2022     # the 2022 edition
    python download_data.py --archive ~/Downloads/master.zip    # a toolkit zip (or synergyreid_data.zip) you downloaded
    python download_data.py --source synthetic --scale small    # the offline twin (seconds)
    python download_data.py --source synthetic --scale full --preview docs/twin_crops.png

The toolkit archive is streamed (progress bar, retries, a partial file is resumed on the next run),
its inner synergyreid_data.zip is checked against the md5, then extracted safely. What an archive is
(toolkit or data zip) is told by its content, not its name; a file given with --archive is never
moved, overwritten or deleted. Running the same command again on verified data does nothing.
Exit status 2: a bad archive, md5 or folder (the message says which); 1: the download failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from reid.config import save_config
from reid.download import SYNERGYREID_MD5, TOOLKIT_URLS, prepare_synergyreid
from reid.errors import run_script
from reid.synthetic.twin import contact_sheet, generate_twin, plan_twin


@dataclass
class Configuration:
    """Download and extract SynergyReID, or draw its synthetic twin."""

    source: Literal["toolkit", "synthetic"] = "toolkit"
    """toolkit: the official data from the challenge repository; synthetic: the offline twin."""
    data_dir: Path = Path("data")
    """Folder that receives data_reid/ (and the downloaded zip)."""
    year: Literal[2022, 2023] = 2023
    """Challenge edition; picks the default url and md5."""
    url: str | None = None
    """Toolkit repository archive or synergyreid_data.zip to download; None: the toolkit archive of --year."""
    md5: str | None = None
    """Expected md5 of synergyreid_data.zip; None: the published sum for --year."""
    archive: Path | None = None
    """A toolkit archive or synergyreid_data.zip already on disk: used instead of downloading."""
    scale: Literal["small", "full"] = "small"
    """Synthetic twin size: small (60 training ids, seconds) or full (the real counts)."""
    seed: int = 0
    """Synthetic twin seed: the same seed gives the same bytes."""
    workers: int | None = None
    """Processes drawing the synthetic twin; None: one per CPU core."""
    preview: Path | None = None
    """Synthetic only: also save a contact sheet of twin crops (people x frames) to this PNG."""
    force: bool = False
    """Redo the work even if data_dir/data_reid already holds verified data (it is replaced)."""
    keep_archive: bool = False
    """Keep the downloaded toolkit archive after its inner zip was taken out."""
    timeout: float = 30.0
    """Seconds to wait for the server (connection, and between received bytes)."""
    retries: int = 5
    """Download attempts after the first, each resuming where the last one stopped."""


def main(config: Configuration) -> None:
    if config.source == "synthetic":
        data_reid = generate_twin(config.data_dir, config.scale, config.seed, workers=config.workers, force=config.force)
        if config.preview is not None:
            config.preview.parent.mkdir(parents=True, exist_ok=True)
            contact_sheet(data_reid, plan_twin(config.scale, config.seed)).save(config.preview, optimize=True)
            print(f"contact sheet of twin crops: {config.preview}")
    else:
        prepare_synergyreid(
            config.data_dir,
            url=config.url or TOOLKIT_URLS[config.year],
            md5=config.md5 or SYNERGYREID_MD5[config.year],
            archive=config.archive,
            force=config.force,
            keep_archive=config.keep_archive,
            timeout=config.timeout,
            retries=config.retries,
        )
    save_config(config, config.data_dir / "download_config.json")
    print(f"next: python preprocess_data.py --data-dir {config.data_dir}")


if __name__ == "__main__":
    run_script(main, Configuration)
