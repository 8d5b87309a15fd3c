"""``python -m weakcorr``: the command line, as the ``weakcorr`` script.

The guard matters: worker processes started with the spawn method (local pools, Dask's
LocalCluster) import the main module again and must not rerun the command.
"""

from weakcorr.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
