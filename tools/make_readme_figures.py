"""Regenerate the PNGs that README.md's training tour shows (``notebooks/figures/``).

Usage (no PyTorch needed; about two minutes on two cores)::

    python tools/make_readme_figures.py

It does what the README's main job does, ``tinycnn train`` with the default settings, into a
temporary folder, and copies the run's plots. The figures are therefore exactly what a newcomer's
first run writes to ``runs/train/``.
"""
import pathlib
import shutil
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIGURES_DIR = ROOT / "notebooks" / "figures"
FIGURES = ("curves.png", "confusion_matrix.png", "filters.png", "feature_maps.png", "embedding_tsne.png")


def main():
    sys.path.insert(0, str(ROOT))
    from tinycnn import cli

    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        run = pathlib.Path(folder) / "train"
        code = cli.main(["train", "--out", str(run)])
        if code != 0:
            return code
        for name in FIGURES:
            shutil.copyfile(run / name, FIGURES_DIR / name)
            print(f"wrote {FIGURES_DIR / name} ({(FIGURES_DIR / name).stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
