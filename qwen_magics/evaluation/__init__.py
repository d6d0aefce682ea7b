"""``%%qwen_eval``: a prompt over a dataset's rows at several sampling settings, every answer scored.

:mod:`.scorers` score answers, :mod:`.stats` holds the statistics (scipy.stats),
:mod:`.run` plans and runs the requests on the map's machinery,
:mod:`.report` is the result and its display, :mod:`.magic` the magic.
Nothing here is imported when the extension loads but the magic's module.
The folder is ``evaluation``, not ``evaluate``: a subpackage of that name would
replace the ``qwen_magics.evaluate`` function once imported.
"""
