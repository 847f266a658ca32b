"""The lab above the product: the toy world of the CPU default (the toydrive generator, the toy models: tiny
architectures, the toy CLIP and the toy base policy), and the reports built on it (`toy-report`, `ablate`).

It reaches the product only as a user does (recipes, data files, model folders, the training and evaluation API);
no product module imports it (`tests/test_structure.py`). `prepare.py` carries out a toy recipe's `lab` section.
"""
