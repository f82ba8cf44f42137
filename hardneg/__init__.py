"""hardneg: mine hard negatives for retrieval training and remove false negatives before they poison it."""

__version__ = "0.1.0"
