"""Training VC2L encoders (installed as ``vc2l_retriever.training``); needs ``pip install 'vc2l-retriever[train]'``."""
