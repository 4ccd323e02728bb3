"""Training VC2L encoders (installed as ``vc2l_retriever.training``); needs ``pip install 'vc2l-retriever[train]'``.

Modules, in data-flow order:

- ``build_dataset``: HTML/PDF folders -> the paper's interleaved-document JSONL (+ image folder), split by file.
- ``data``: lazy JSONL reader, the paper's pair sampling, rendering and collation.
- ``teacher``: all-MiniLM-L6-v2 targets, cached on disk by text hash.
- ``losses``: InfoNCE (all-gathered with gradients under torch.distributed), GCL, distillation.
- ``config`` / ``trainer`` / ``checkpoint`` / ``distributed``: the loop (``vc2l train CONFIG.yaml``).
- ``teacher_body`` / ``dense`` / ``dense_train``: the reader's dense distillation (stages a-c): the teacher's
  tokenizer offsets, word table and hidden states, the body surgery, per-character / per-layer / sentence
  targets and losses, and the loop (``python -m vc2l_retriever.training.dense_train RECIPE.yaml``).
- ``evaluate``: held-out retrieval (title->section, next-snippet, image->caption), in and out of domain, next to
  all-MiniLM-L6-v2 and BM25.
- ``export`` / ``model_card`` / ``reader_card`` / ``bench_speed``: ``vc2l export RUN_DIR OUT_DIR``, the cards
  (ViT runs / reader runs), speed vs MiniLM.
"""
