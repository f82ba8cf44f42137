"""hardneg: mine hard negatives for retrieval training and remove false negatives before they poison it.

`hardneg.mine_hard_negatives(dataset, ...)` is the Python API (hardneg.api; imported on first use, so `import
hardneg` stays light)."""

__version__ = "0.1.0"

__all__ = ["__version__", "mine_hard_negatives"]


def __getattr__(name: str):
    if name == "mine_hard_negatives":
        from hardneg.api import mine_hard_negatives

        return mine_hard_negatives
    raise AttributeError(f"module 'hardneg' has no attribute {name!r}")
