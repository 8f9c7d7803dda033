"""Data shipped with the experiments: the live sides of the twin's noise floor (``twin/``)."""
