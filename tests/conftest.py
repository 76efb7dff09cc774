"""Shared test fixtures, made once per session: the reference cases, the small synthetic twin, one torch thread."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.reference_cases import REFERENCE_DIR, missing_files, rebuild

REPO_ROOT = Path(__file__).resolve().parents[1]
pytest_plugins = ("pytester",)  # tests/test_reference_cases.py runs a small session of its own


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """torch on one thread for the whole session. Tiny models and small matrices gain nothing from a
    second thread, and on a busy 2-core machine every parallel kernel waits for the other core (x100);
    torch's spinning threads would also starve scikit-learn's t-SNE."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def reference_dir(tmp_path_factory) -> Path:
    """A folder with the whole reference cases (``<case>.npz`` with every published key, the input CSVs),
    rebuilt once per session from the trimmed copy in tests/reference/. A missing file there is a failure."""
    missing = missing_files()
    if missing:
        pytest.fail(f"reference cases incomplete: {', '.join(missing)} missing from {REFERENCE_DIR} "
                    f"(they are part of the repository: restore them with git checkout -- tests/reference)")
    return rebuild(tmp_path_factory.mktemp("reference"))


@pytest.fixture(scope="session")
def twin_images(tmp_path_factory) -> Path:
    """The small synthetic twin (seed 0) as download_data.py --source synthetic writes it (images, marker,
    challenge truth; no tables), drawn once per session; returns data_dir. Read-only for its users."""
    from reid.synthetic.twin import generate_twin

    data_dir = tmp_path_factory.mktemp("twin_images")
    generate_twin(data_dir, "small", seed=0, workers=2, progress=False)
    return data_dir


@pytest.fixture(scope="session")
def twin_data(twin_images, tmp_path_factory) -> Path:
    """The small twin with train_df.csv and challenge_df.csv, as preprocess_data.py leaves it: a data_dir
    whose data_reid/ links the image folders of ``twin_images``; returns data_dir. Read-only for its users."""
    from reid.catalog import challenge_frame, training_frame
    from reid.layout import DATA_FOLDER, TRUTH_NAME

    data_dir = tmp_path_factory.mktemp("twin_data")
    data_reid = data_dir / DATA_FOLDER
    data_reid.mkdir()
    for entry in (twin_images / DATA_FOLDER).iterdir():  # the image folders and the marker
        (data_reid / entry.name).symlink_to(entry)
    (data_dir / TRUTH_NAME).symlink_to(twin_images / TRUTH_NAME)
    training_frame(data_reid).to_csv(data_reid / "train_df.csv", index=False)
    challenge_frame(data_reid).to_csv(data_reid / "challenge_df.csv", index=False)
    return data_dir


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``cuda`` every test that needs a GPU, so that ``python -m pytest -m cuda`` runs just those
    (bench/gpu_check.py does): a ``skipif`` whose reason names CUDA, or a parameter that is a CUDA device
    (``"cuda"``, ``"cuda:1"``, ``torch.device("cuda")``: only collected where a GPU is)."""
    for item in items:
        skips_without_gpu = any("cuda" in str(mark.kwargs.get("reason", "")).lower() for mark in item.iter_markers("skipif"))
        params = getattr(item, "callspec", None)
        on_gpu = params is not None and any(str(value).startswith("cuda") for value in params.params.values()
                                            if isinstance(value, (str, torch.device)))
        if skips_without_gpu or on_gpu:
            item.add_marker(pytest.mark.cuda)
