"""One prompt over the rows of a dataset: rows and templates, the live run, resume, the result frame."""
