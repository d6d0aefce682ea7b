"""The reliability suite (issue 8): faults, bad input, secrets, untrusted output and load.

A package, so that its ``conftest.py`` does not shadow ``tests/conftest.py``
(both would otherwise be imported as the module ``conftest``).
"""
