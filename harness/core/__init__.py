"""The foundation every other folder stands on, knowing nothing of CIR: errors that print as one
line (``errors``), reading user files and writing files atomically (``files``), the cache
folder and locks (``paths``), what the cache holds and pruning it (``cache``), settings files
and their validation (``settings``), secrets kept out of logs (``secrets``), devices and mixed
precision (``device``), torch.distributed helpers (``distributed``), the machine and package
versions a result records (``environment``; its commit and whether the tree was dirty from
``source``, torch-free) and the set-up of every harness process (``process``).

Imports nothing from the harness outside this folder.
"""
