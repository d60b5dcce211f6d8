"""SQL storage: the inventory of objects, the clusters and the change log."""
