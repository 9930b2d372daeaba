"""Model implementations and glue: the Infinity VAR backbone (`varbench.models.infinity`)."""
