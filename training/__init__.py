"""Training VC2L encoders (installed as ``vc2l_retriever.training``); needs ``pip install 'vc2l-retriever[train]'``.

Modules, in data-flow order:

- ``build_dataset``: HTML/PDF folders -> the paper's interleaved-document JSONL (+ image folder), split by file.
- ``data``: lazy JSONL reader, the paper's pair sampling, rendering and collation.
- ``teacher``: all-MiniLM-L6-v2 targets, cached on disk by text hash.
- ``losses``: InfoNCE (all-gathered with gradients under torch.distributed), GCL, distillation.
- ``config`` / ``trainer`` / ``checkpoint`` / ``distributed``: the loop (``vc2l train CONFIG.yaml``).
- ``evaluate``: held-out retrieval (title->section, next-snippet, image->caption).
- ``export`` / ``model_card`` / ``bench_speed``: ``vc2l export RUN_DIR OUT_DIR``, the card, speed vs MiniLM.
"""
