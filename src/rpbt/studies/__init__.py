"""Studies room: experiments built on the library (:mod:`rpbt.studies.spike`, the value-loss spike study)."""
