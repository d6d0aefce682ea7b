"""``%%qwen_eval``: a prompt over a dataset's rows at several sampling settings, every answer scored.

:mod:`.scorers` score answers, :mod:`.stats` holds the statistics (scipy.stats),
:mod:`.run` plans and runs the requests on the map's machinery,
:mod:`.report` is the result and its display; the magic is
:mod:`qwen_magics.magics.eval`.  Nothing here is imported when the extension loads.
The folder is ``evaluation``, not ``evaluate``: a subpackage of that name would
replace the ``qwen_magics.evaluate`` function once imported.
"""


def sums():
    """The package's small arithmetic set, for trying evaluations: 40 two-digit sums and differences as a
    DataFrame with columns ``a``, ``op``, ``b`` and ``answer`` (``{a} {op} {b}`` is ``answer``)."""
    from importlib.resources import files

    import pandas as pd

    with files(__name__).joinpath("data", "sums.csv").open(encoding="utf-8") as source:
        return pd.read_csv(source)
