#!/usr/bin/env bash
# A second stage for vc2l-default on the 2-core CPU machine (measured, not shipped): the GPU-trained model
# (default_gpu.sh) fine-tuned on twice the Debian manuals, WordNet's everyday vocabulary and heading -> section
# pairs. Run from the repository root,
# in the project's virtual environment (`bash scripts/setup_venv.sh all`: training plus the PDF and HTML
# readers); needs root for apt-get.
# Every training source is named here; nothing but Debian packages is downloaded.
set -euo pipefail

# 1. Sources: the seven Debian documentation packages of default.sh, and WordNet 3.0 (Princeton's WordNet
#    licence, permissive).
apt-get install -y python3.11-doc python-scipy-doc python-skimage-doc sphinx-doc postgresql-doc-15 \
    kicad-doc-en texlive-latex-extra-doc wordnet-base
ROOTS="/usr/share/doc/python3.11/html /usr/share/doc/python-scipy-doc/html /usr/share/doc/python-skimage-doc/html
       /usr/share/doc/sphinx-doc/html /usr/share/doc/postgresql-doc-15/html /usr/share/doc/kicad/help/en
       /usr/share/doc/texlive-doc/latex"

# 2. Data. data/docs is the model card's held-out split (default.sh step 2); data/docs2 is the same manuals with
#    5x the files per source and PDFs to 24 pages. The split hashes file paths, so no held-out file of data/docs
#    is in data/docs2's training split. WordNet: the 8,000 most common synsets, minus the held-out ones.
# shellcheck disable=SC2086
python -m vc2l_retriever.training.build_dataset $ROOTS --out data/docs --max-chars 480 --heldout-fraction 0.06 \
    --max-files-per-root 1200 --max-pages 12
# shellcheck disable=SC2086
python -m vc2l_retriever.training.build_dataset $ROOTS --out data/docs2 --max-chars 480 --heldout-fraction 0.06 \
    --max-files-per-root 6000 --max-pages 24
python -m vc2l_retriever.training.build_lexicon --out data/lexicon8k --max-synsets 8000
cat data/docs2/train.jsonl data/lexicon8k/train.jsonl > data/docs2/train_lexicon8k.jsonl

# 3. Train from the shipped weights (resumable: the same command continues from the last checkpoint). The run
#    scores its starting weights first, so `--which best` never exports a model worse than the one it started from.
mkdir -p runs
vc2l train training/recipes/finetune_cpu.yaml 2>&1 | tee -a runs/finetune-cpu.log

# 4. Export (fp16; its provenance keeps the starting model under init_from), write its card, and compare it with
#    the shipped model on the larger held-out split and on benchmarks/ (both models scored on the same data).
#    This run was NOT shipped: it gained on heading -> section but lost on the text+image sets (README.md here).
#    To ship a stage 2 that wins everywhere, export it over vc2l_retriever/models/vc2l-default instead.
vc2l export runs/finetune-cpu runs/finetune-cpu/export --which best --fp16
python -m vc2l_retriever.training.bench_speed --model runs/finetune-cpu/export | tee runs/speed-cpu2.json
python -m vc2l_retriever.training.model_card runs/finetune-cpu runs/finetune-cpu/export \
    --speed runs/speed-cpu2.json --notes training/recipes/finetune_cpu_card_notes.md \
    --hardware "one lent NVIDIA H100 GPU (stage 1, 25 minutes), then a 2-core CPU (stage 2, fine-tuning)" \
    --recipe "training/recipes/default_gpu.sh, then finetune_cpu.sh and finetune_cpu.yaml" \
    --extra-data "WordNet 3.0 glosses (Debian wordnet-base, 8,000 common synsets) in stage 2"
for model in vc2l_retriever/models/vc2l-default runs/finetune-cpu/export; do
    python -m vc2l_retriever.training.evaluate --model "$model" --heldout data/docs2/heldout.jsonl --queries 2000 \
        --wordnet /usr/share/wordnet
    python benchmarks/bench_quality.py --model "$model" --csr-pdfs 2 --max-pages 2   # needs the [bench] extra
done
