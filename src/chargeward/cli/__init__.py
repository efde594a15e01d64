"""The ``chargeward`` command line: the only place that exits the process."""
