#!/usr/bin/env bash
# Rebuilds vc2l-default from scratch: Debian documentation -> interleaved JSONL -> training -> export.
# Run from the repository root. Needs root for apt-get (or install the packages another way), and
# `pip install -e '.[train]'`. Every training source is named below; nothing is downloaded besides the
# Debian packages.
set -euo pipefail

# 1. Sources: Debian documentation packages (HTML manuals; texlive-latex-extra-doc ships HTML+PDF manuals).
apt-get install -y python3.11-doc python-scipy-doc python-skimage-doc sphinx-doc postgresql-doc-15 \
    kicad-doc-en texlive-latex-extra-doc

# 2. Files -> documents (one per file) -> segments (snippets from vc2l_retriever.ingest); 6% of files held out.
python -m vc2l_retriever.training.build_dataset \
    /usr/share/doc/python3.11/html \
    /usr/share/doc/python-scipy-doc/html \
    /usr/share/doc/python-skimage-doc/html \
    /usr/share/doc/sphinx-doc/html \
    /usr/share/doc/postgresql-doc-15/html \
    /usr/share/doc/kicad/help/en \
    /usr/share/doc/texlive-doc/latex \
    --out data/docs --max-chars 480 --heldout-fraction 0.06 --max-files-per-root 1200 --max-pages 12

# 3. Train (one CPU thread; resumable: run the same command again to continue from the last checkpoint).
mkdir -p runs
nice -n 10 vc2l train training/recipes/default.yaml 2>&1 | tee -a runs/default.log

# 4. Export the best checkpoint (fp16 weights) and write the model card.
vc2l export runs/default vc2l_retriever/models/vc2l-default --which best --fp16
python -m vc2l_retriever.training.bench_speed --model vc2l_retriever/models/vc2l-default | tee runs/speed.json
python -m vc2l_retriever.training.model_card runs/default vc2l_retriever/models/vc2l-default \
    --speed runs/speed.json --notes training/recipes/default_card_notes.md
